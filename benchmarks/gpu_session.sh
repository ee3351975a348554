#!/usr/bin/env bash
# The GPU checks in one go, for a GPU machine lent for a few minutes:
#   1. benchmarks/gpu_fast94.py: the fast94 preset, a warm-up, then --seeds timed runs (test accuracy,
#      training and total seconds per seed);
#   2. benchmarks/gpu_check.py: vgg3 and combined throughput in fp32 / bf16 / bf16 + compile, and the
#      projected hours of the whole study at its original epochs.
# Each part has its own time limit so that one stuck part cannot eat the other's time.
#
#   bash benchmarks/gpu_session.sh DATA_DIR OUT_DIR [SEEDS]
#   bash benchmarks/gpu_session.sh ../shared/data/cifar-10-batches-bin /tmp/gpu-out 3
#   DEVICE=cpu TINY=1 bash benchmarks/gpu_session.sh DATA_DIR /tmp/gpu-out 1   # the script itself on a CPU
#
# OUT_DIR receives: gpu.txt (the device as nvidia-smi and torch see it), fast94.log,
# gpu_fast94.json and each seed's summary.json / metrics.csv (no checkpoints), gpu_check.log and
# gpu_check.json.
set -u
DATA=$(realpath "${1:?usage: gpu_session.sh DATA_DIR OUT_DIR [SEEDS]}")
OUT=$(realpath -m "${2:?usage: gpu_session.sh DATA_DIR OUT_DIR [SEEDS]}")
SEEDS=${3:-3}
DEVICE=${DEVICE:-cuda}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export CIFARLAB_DATA=$DATA  # gpu_check.py reads the data set from here
mkdir -p "$OUT"
RUNS=$(mktemp -d)  # run folders (with checkpoints) stay outside OUT

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} | tee "$OUT/gpu.txt"

TINY_ARGS=()
CHECK_ARGS=()
if [ -n "${TINY:-}" ]; then
  TINY_ARGS=(--tiny)
  CHECK_ARGS=(--steps 3 --reps 1 --subset 640 --no-compile)
fi

echo "== fast94, $SEEDS seed(s) on $DEVICE"
timeout "${FAST94_LIMIT:-240}" python3 benchmarks/gpu_fast94.py --device "$DEVICE" --seeds "$SEEDS" \
  --data "$DATA" --out "$RUNS/fast94" "${TINY_ARGS[@]}" 2>&1 | tee "$OUT/fast94.log"
cp "$RUNS/fast94/gpu_fast94.json" "$OUT/" 2>/dev/null
for d in "$RUNS"/fast94/seed*; do
  [ -d "$d" ] || continue
  mkdir -p "$OUT/fast94/$(basename "$d")"
  cp "$d"/summary.json "$d"/metrics.csv "$d"/config.yaml "$OUT/fast94/$(basename "$d")/" 2>/dev/null
done

echo "== gpu_check on $DEVICE"
timeout "${CHECK_LIMIT:-300}" python3 benchmarks/gpu_check.py --device "$DEVICE" --json "$OUT/gpu_check.json" \
  "${CHECK_ARGS[@]}" 2>&1 | tee "$OUT/gpu_check.log"
rm -rf "$RUNS"
echo "== done $(date -u)"
