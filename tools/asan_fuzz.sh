#!/usr/bin/env bash
# Builds fastsae with AddressSanitizer into /tmp and runs the hypothesis fuzz program of
# tests/cooc/test_bad_input.py (FUZZ) against it: a stronger check than "no crash", since any invalid
# read or write in the native core aborts the run. Entry points: the native accumulator and
# totals, the spanning forest (dense and raw CSR), structurally malformed sparse matrices of
# every scipy format through every public function that takes one (MSF, threshold,
# normalisations, feature families, family stats, merge, geometry orderings), the other public
# functions taking codes or matrices, and damaged co-occurrence files.
# Usage: tools/asan_fuzz.sh [cases per entry point, default 10000] [entry point ...]
#   VENV=/path/to/venv (default .venv) supplies python/pip; nothing is installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
out=${TMPDIR:-/tmp}/fastsae-asan
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# allocator_may_return_null: an impossible allocation (e.g. numpy asked for 8 TiB) fails as it does
# without ASan, with a MemoryError, instead of aborting; invalid reads and writes still abort.
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
LD_PRELOAD="$preload" "$venv/bin/pip" install -q --no-build-isolation --no-deps --upgrade --target "$out/site" \
  -Cbuild-dir="$out/build" "-Ccmake.define.CMAKE_CXX_FLAGS=-fsanitize=address -fno-omit-frame-pointer" .
# The pure-Python sources come from this checkout; only the extension is the ASan build.
rm -rf "$out/pkg" && mkdir -p "$out/pkg" && cp -r python/fastsae "$out/pkg/"
cp "$out"/site/fastsae/_native*.so "$out/pkg/fastsae/"
start=$(date +%s)
FUZZ_ENTRY="${*:2}" LD_PRELOAD="$preload" "$venv/bin/python" -W ignore - "$out/pkg" "${1:-10000}" <<'PY'
import sys
sys.path.insert(0, sys.argv[1]); sys.path[1:1] = ["tests/cooc", "tests"]  # test_bad_input, and the conftest it imports
import fastsae
assert fastsae.__file__.startswith(sys.argv[1]), fastsae.__file__
import test_bad_input
exec(compile(test_bad_input.FUZZ.replace("MAX", sys.argv[2]), "fuzz", "exec"))
PY
echo "asan_fuzz: passed in $(( $(date +%s) - start )) s"
