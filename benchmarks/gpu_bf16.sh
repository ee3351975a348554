#!/usr/bin/env bash
# Can bf16 stand in for fp32 at the study's protocol? vgg3, seeds 0..SEEDS-1, 100 epochs, in fp32
# (amp=off: TF32 off too) and in bf16 autocast, on one GPU, then `cifarlab compare` of the two groups:
# the difference of the mean test accuracies, Welch's test and its 95% interval, the validation curves
# overlaid. bf16 is admitted for the study when that interval lies within +-1 point (docs/results.md, "Arithmetic").
#
#   bash benchmarks/gpu_bf16.sh DATA_DIR OUT_DIR [STATE_DIR]
#   DEVICE=cpu TINY=1 LIMIT=120 bash benchmarks/gpu_bf16.sh DATA_DIR /tmp/bf16-out    # the script on a CPU
#
# The two studies run at once, each with its seeds as parallel workers: at batch 64 one vgg3 run
# leaves most of an H100 idle (it is bound by kernel launches), so 2 x SEEDS processes share it.
# Each study is stopped after LIMIT seconds (default 500) with a Ctrl-C, which keeps every epoch
# done; the same command continues them. Work happens in WORK (default /tmp/cifarlab-bf16), which a
# GPU machine keeps while it stays warm, so a second call continues there. OUT_DIR receives:
#   gpu.txt, fp32.log, bf16.log           the device and both studies' output
#   records/{fp32,bf16}/                  study.json and each run's config, metrics, summary, curves
#   state/                                every unfinished run with its checkpoint (a few MB each): pass
#                                         it as STATE_DIR to a later call on a fresh machine to continue
#   compare/                              compare.md / .html / .json once both groups have finished runs
#
# On a lent GPU machine (nothing installed, 64 MB per call): the data set in three parts, each an
# ignored folder carried by one call and moved outside the tree there, the last call running this:
#   data/gpu1: data_batch_1.bin data_batch_2.bin       -> mkdir -p /tmp/cifar && mv data/gpu1/* /tmp/cifar/
#   data/gpu2: data_batch_3.bin data_batch_4.bin       -> mv data/gpu2/* /tmp/cifar/
#   data/gpu3: data_batch_5.bin test_batch.bin batches.meta.txt
#              -> mv data/gpu3/* /tmp/cifar/ && LIMIT=480 bash benchmarks/gpu_bf16.sh /tmp/cifar $OUT
set -um  # -m: the background studies keep SIGINT (the stop signal), which non-interactive bash ignores for them
DATA=$(realpath "${1:?usage: gpu_bf16.sh DATA_DIR OUT_DIR [STATE_DIR]}")
OUT=$(realpath -m "${2:?usage: gpu_bf16.sh DATA_DIR OUT_DIR [STATE_DIR]}")
STATE=${3:-}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-3}
LIMIT=${LIMIT:-500}
WORK=${WORK:-/tmp/cifarlab-bf16}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" "$WORK"
if [ -n "$STATE" ]; then  # runs carried from an earlier machine: never over newer work here
  cp -rn "$STATE"/. "$WORK"/
fi

EXTRA=()
if [ -n "${TINY:-}" ]; then  # the script itself, small: a subset, two epochs, a narrow network
  EXTRA=(subset=600 val_split=200 epochs=2 "widths=[8,8,8]" dense=16)
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} | tee "$OUT/gpu.txt"

study() {  # name amp
  timeout -s INT -k 120 "$LIMIT" python3 -m cifarlab study --out "$WORK/$1" --only vgg3 --seeds "$SEEDS" \
    --workers "$SEEDS" --data "$DATA" device="$DEVICE" amp="$2" "${EXTRA[@]}" > "$OUT/$1.log" 2>&1
  echo "== $1 study exited $? ($(date -u +%T))" >> "$OUT/$1.log"
}
study fp32 off &
study bf16 bf16 &
wait
tail -n 5 "$OUT/fp32.log" "$OUT/bf16.log"

# records (no checkpoints) and the unfinished runs' state
for name in fp32 bf16; do
  [ -f "$WORK/$name/study.json" ] || continue
  mkdir -p "$OUT/records/$name"
  cp "$WORK/$name/study.json" "$OUT/records/$name/"
  for run in "$WORK/$name"/runs/vgg3/seed*; do
    [ -d "$run" ] || continue
    rel=${run#"$WORK"/}
    mkdir -p "$OUT/records/$rel"
    for f in config.yaml metrics.csv summary.json curves.png train.log; do
      [ -f "$run/$f" ] && cp "$run/$f" "$OUT/records/$rel/"
    done
    if [ ! -f "$run/summary.json" ] && [ -f "$run/checkpoint.pt" ]; then
      mkdir -p "$OUT/state/$rel" && cp "$run"/* "$OUT/state/$rel/"
    fi
  done
  [ -d "$OUT/state/$name" ] && cp "$WORK/$name/study.json" "$OUT/state/$name/"
done

if ls "$WORK"/fp32/runs/vgg3/seed*/summary.json "$WORK"/bf16/runs/vgg3/seed*/summary.json >/dev/null 2>&1; then
  python3 -m cifarlab compare "$WORK"/fp32/runs/vgg3/seed* "$WORK"/bf16/runs/vgg3/seed* --out "$OUT/compare" \
    2>&1 | tee "$OUT/compare.log"
fi
echo "== done $(date -u)"
