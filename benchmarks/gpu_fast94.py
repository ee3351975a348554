"""Train the fast94 preset on a GPU and report its time after a warm-up run.

    python3 benchmarks/gpu_fast94.py --seeds 2                  # CUDA, full preset, 2 timed seeds
    python3 benchmarks/gpu_fast94.py --seeds 2 compile=true     # key=value overrides for every run
    python3 benchmarks/gpu_fast94.py --device cpu --tiny        # a CPU check of the script itself

The warm-up run (one short epoch on a subset, same device and settings) pays for CUDA
context creation, cuDNN algorithm search and any compilation, so the timed runs measure
training as it is once the machine is ready. Each timed run is an ordinary run folder
under --out; the script prints, per seed, the test accuracy (measured once, at the end),
the training seconds (the epochs, with their per-epoch validation) and the total seconds
from data loading to the final test evaluation, then the mean, and writes them to
--out/gpu_fast94.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cifarlab import runtime  # noqa: E402

runtime.apply()  # the command's engine settings, before torch loads

from cifarlab.config import apply_overrides, load_preset  # noqa: E402
from cifarlab.train import train  # noqa: E402

# --tiny: a few seconds on a CPU; shows the script works, measures nothing.
TINY = ["subset=1000", "val_split=200", "epochs=1", "batch_size=100", "lr=0.15", "tta=0"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    ap.add_argument("--seeds", type=int, default=1, help="timed runs, seeds 0..N-1")
    ap.add_argument("--out", default=f"runs/gpu-fast94-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument("--data", help="CIFAR-10 folder (default: $CIFARLAB_DATA)")
    ap.add_argument("--tiny", action="store_true", help="tiny runs (a check of the script, not a timing)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device visible to torch; use --device cpu --tiny to check the script")
    over = [f"device={args.device}"] + (TINY if args.tiny else []) + args.overrides
    cfg = apply_overrides(load_preset("fast94"), over)
    out = Path(args.out)
    quiet = lambda *a: None  # noqa: E731

    size = [] if args.tiny else ["subset=5000", "val_split=1000"]
    warm = apply_overrides(cfg, size + ["epochs=1", "test=false"])
    t = time.perf_counter()
    train(warm, out / "warmup", data_path=args.data, progress=False, log=quiet, force=True)  # each call re-times
    print(f"warm-up: {time.perf_counter() - t:.1f} s on {args.device}", flush=True)

    rows = []
    for seed in range(args.seeds):
        run = apply_overrides(cfg, [f"seed={seed}"])
        s = train(run, out / f"seed{seed}", data_path=args.data, progress=False, log=quiet, force=True)
        rows.append({"seed": seed, "test_acc": s["test_acc"], "train_seconds": s["wall_seconds"],
                     "total_seconds": s["total_seconds"], "device": s["device"]})
        print(f"seed {seed}: test {100 * s['test_acc']:.2f}%  train {s['wall_seconds']:.2f} s  "
              f"total {s['total_seconds']:.2f} s  ({s['device']})", flush=True)
    accs = [r["test_acc"] for r in rows]
    mean = {"test_acc": statistics.fmean(accs),
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "train_seconds": statistics.fmean(r["train_seconds"] for r in rows),
            "total_seconds": statistics.fmean(r["total_seconds"] for r in rows)}
    print(f"mean over {len(rows)}: test {100 * mean['test_acc']:.2f}% (sd {100 * mean['test_acc_std']:.2f})  "
          f"train {mean['train_seconds']:.2f} s  total {mean['total_seconds']:.2f} s"
          + ("  [--tiny: a script check, not a result]" if args.tiny else ""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_fast94.json").write_text(json.dumps({"overrides": over, "runs": rows, "mean": mean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
