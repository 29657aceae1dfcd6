#!/usr/bin/env bash
# Everything the Triton kernels need checked on a real NVIDIA GPU, in one command that fits a
# 10-minute slot on a machine with its own torch + triton and no network:
#
#   bash benchmarks/gpu_session.sh [DEST] [--quick]
#   STEPS=tests,kernels bash benchmarks/gpu_session.sh ...   (a subset: tests, kernels, train)
#
# 1. builds fastsae (the nanobind extension too) into a private folder with the machine's own
#    Python packages (no download, no build isolation);
# 2. runs the kernel tests on the GPU, without the interpreter (tests/ops/test_triton_kernels.py,
#    tests/ops/test_ops.py, the trainer on the Triton path);
# 3. runs benchmarks/bench_kernels_gpu.py (correctness gate first, then the timings), with a
#    time budget so that it ends in the slot; results are rewritten after every configuration;
# 4. runs benchmarks/bench_train_gpu.py (the trainer's examples/s, fp32 and bf16, fastsae and
#    the torch path).
#
# DEST (default benchmarks/results/gpu) receives: gpu.txt (nvidia-smi, versions), build.log,
# tests.log, bench.log, train.log, table.md and the results JSON. Each step's exit status is in status.txt.
set -uo pipefail
DEST=${1:-benchmarks/results/gpu}
QUICK=${2:-}
PY=${PYTHON:-python3}
SITE=${FASTSAE_SITE:-/tmp/fastsae-site}
cd "$(dirname "$0")/.."
mkdir -p "$DEST"
: >"$DEST/status.txt"
step() { echo "$1: $2" >>"$DEST/status.txt"; echo "== $1: exit $2"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__);
print('gpu', torch.cuda.get_device_name(), 'SMs', torch.cuda.get_device_properties(0).multi_processor_count)"
} >"$DEST/gpu.txt" 2>&1
cat "$DEST/gpu.txt"

t=$(date +%s)
$PY -m pip install --no-deps --no-build-isolation --no-index --no-cache-dir --target "$SITE" . >"$DEST/build.log" 2>&1
rc=$?; step build "$rc ($(( $(date +%s) - t )) s)"
[ "$rc" = 0 ] || { tail -30 "$DEST/build.log"; exit 1; }
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

STEPS=${STEPS:-tests,kernels,train}
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if want tests; then
t=$(date +%s)
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/ops/test_triton_kernels.py tests/ops/test_ops.py \
  -k "not aot" 2>&1 | tee "$DEST/tests.log" | tail -25
step tests "${PIPESTATUS[0]} ($(( $(date +%s) - t )) s)"
fi

if want kernels; then
t=$(date +%s)
budget=${BENCH_BUDGET_S:-180}
[ "$QUICK" = "--quick" ] && extra="--quick" || extra=""
timeout $(( budget + 120 )) $PY benchmarks/bench_kernels_gpu.py $extra --budget-s $budget \
  --markdown "$DEST/table.md" 2>&1 | tee "$DEST/bench.log"
step kernels "${PIPESTATUS[0]} ($(( $(date +%s) - t )) s)"
fi

if want train; then
t=$(date +%s)
timeout 150 $PY benchmarks/bench_train_gpu.py 2>&1 | tee "$DEST/train.log"
step train "${PIPESTATUS[0]} ($(( $(date +%s) - t )) s)"
fi
cp benchmarks/results/kernels_gpu_*.json benchmarks/results/train_gpu_*.json "$DEST/" 2>/dev/null
cat "$DEST/status.txt"
