#!/usr/bin/env bash
# Builds fastsae with AddressSanitizer into /tmp and runs the hypothesis fuzz suite of
# tests/test_bad_input.py against it (a stronger check than "no crash": no invalid read/write).
# Usage: tools/asan_fuzz.sh [examples per entry point, default 3000]   (after `make venv`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${TMPDIR:-/tmp}/fastsae-asan
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0
LD_PRELOAD="$preload" .venv/bin/pip install -q --no-build-isolation --no-deps --upgrade --target "$out/site" \
  -Cbuild-dir="$out/build" "-Ccmake.define.CMAKE_CXX_FLAGS=-fsanitize=address -fno-omit-frame-pointer" .
LD_PRELOAD="$preload" .venv/bin/python - "$out/site" "${1:-3000}" <<'PY'
import sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, "tests")
import fastsae
assert fastsae.__file__.startswith(sys.argv[1]), fastsae.__file__
import test_bad_input
exec(compile(test_bad_input.FUZZ.replace("MAX", sys.argv[2]), "fuzz", "exec"))
PY
