"""GPU check, under 8 minutes: training throughput of vgg3 and the combined model at batch 64,
and the projected time of the whole study at its original epochs.

    PYTHONPATH=src python3 benchmarks/gpu_check.py                    # on a CUDA machine
    PYTHONPATH=src python3 benchmarks/gpu_check.py --device cpu --steps 3 --reps 1 --subset 640 --no-compile

For each model it times, alternating, cifarlab's own train step (bench.CifarlabContender:
data resident on the device as uint8, batch augmentation there, channels_last, cudnn
autotuning) in these engines: fp32, bf16 autocast, and bf16 + torch.compile (its
compile time reported apart). The study projection takes each experiment's epochs (as the
study states them; 400, the combined model's, where it states none) times 50,000 images over
the best measured rate of the model it resembles, plus one test-set evaluation per epoch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from cifarlab import runtime

runtime.apply()  # the command's engine settings, before torch loads

import torch  # noqa: E402

from cifarlab.bench.throughput import COMBINED, VGG3, CifarlabContender, bench_config, device_description, eval_seconds

# experiment id -> (epochs, the throughput that stands for it)
STUDY = {
    "vgg1": (100, "vgg3"), "vgg2": (100, "vgg3"), "vgg3": (100, "vgg3"), "dropout": (100, "vgg3"),
    "weight_decay": (100, "vgg3"), "augmentation": (100, "vgg3"), "increasing_dropout": (200, "vgg3"),
    "dropout_augmentation": (200, "vgg3"), "combined": (400, "combined"), "centered": (400, "combined"),
    "adam": (400, "combined"), "adamw": (400, "combined"), "cosine": (400, "combined"),
    "cosine_restarts": (400, "combined"), "step_decay": (400, "combined"),
    "bn_dropout_swapped": (100, "combined"), "bn_only": (100, "combined"), "dropout_only": (100, "combined"),
}
ENGINES = {"fp32": ['amp="off"'], "bf16": ["amp=bf16"], "bf16+compile": ["amp=bf16", "compile=true"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=200, help="steps of batch 64 per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--subset", type=int, default=20000, help="images resident on the device")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile engine")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device; pass --device cpu to try the script on CPU", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True  # autotune conv algorithms for these fixed shapes
    engines = {k: v for k, v in ENGINES.items() if not (args.no_compile and "compile" in k)}
    t_start = time.perf_counter()
    out = {"device": device_description(device), "torch": torch.__version__, "models": {}}
    print(f"device: {out['device']}")
    for model, base in (("vgg3", VGG3), ("combined", COMBINED)):
        runners, setup = {}, {}
        for eng, ov in engines.items():
            cfg = bench_config(base, [f"device={device.type}", *ov], args.subset)
            t0 = time.perf_counter()
            runners[eng] = CifarlabContender(cfg, device)
            runners[eng].run(10)  # warm-up; for torch.compile this is the compile
            setup[eng] = time.perf_counter() - t0
        samples = {k: [] for k in runners}
        for _ in range(args.reps):
            for k, r in runners.items():
                samples[k].append(r.run(args.steps))
        best = max(runners, key=lambda k: statistics.median(samples[k]))
        ev = eval_seconds(runners[best], runners[best].amp)
        out["models"][model] = {
            "engines": {k: {"images_per_second": statistics.median(v), "min": min(v), "max": max(v),
                            "setup_seconds": setup[k]} for k, v in samples.items()},
            "best": best, "eval_seconds": ev["seconds"]}
        print(f"\n{model}: batch 64, {args.reps} reps x {args.steps} steps")
        print(f"{'engine':<14} {'img/s':>8} {'min-max':>15} {'set-up s':>9}")
        for k, v in out["models"][model]["engines"].items():
            print(f"{k:<14} {v['images_per_second']:>8.0f} {v['min']:>7.0f}-{v['max']:<7.0f} "
                  f"{v['setup_seconds']:>9.1f}")
        print(f"test set (10,000 images) with {best}: {ev['seconds']:.2f} s")
    total = 0.0
    for epochs, like in STUDY.values():
        m = out["models"][like]
        rate = m["engines"][m["best"]]["images_per_second"]
        total += epochs * (50_000 / rate + m["eval_seconds"])
    out["study_projection_hours"] = total / 3600
    out["check_seconds"] = time.perf_counter() - t_start
    print(f"\nprojected study ({len(STUDY)} experiments, {sum(e for e, _ in STUDY.values())} epochs, one seed): "
          f"{total / 3600:.2f} h on this device; check took {out['check_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
