"""Side-by-side images/s of the training step under engine options, on the current device.

    PYTHONPATH=src python3 benchmarks/engine_options.py --reps 3 --steps 30 [--compile]

Each option is a list of config overrides; options alternate (ABAB...) over --reps
repetitions so machine drift hits all of them alike. Prints median and spread.
"""
from __future__ import annotations

import argparse
import statistics
import time

from cifarlab import runtime

runtime.apply()  # the command's engine settings, before torch loads

import torch  # noqa: E402

from cifarlab.bench.throughput import COMBINED, VGG3, bench_config
from cifarlab.engine import build_training, make_batch, prepare_data, setup_threads, train_step

OPTIONS = {  # name -> config overrides (the first is the reference)
    "default": [],  # channels_last, fp32, foreach SGD
    "nchw": ["channels_last=false"],
    "bf16": ["amp=bf16"],
    "fused_sgd": [],  # SGD(fused=True) in place of foreach; set up in run()
    "threads1": ["threads=1"],
}


def fused(opt):
    """The same parameter groups in a fused SGD (one kernel per step instead of a few per tensor list)."""
    groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in opt.param_groups]
    return torch.optim.SGD(groups, lr=groups[0]["lr"], fused=True)


def run(cfg, steps, use_fused=False, warm=5):
    dev = torch.device("cpu")
    data = prepare_data(cfg, dev)
    model, fwd, opt = build_training(cfg, dev)
    if use_fused:
        opt = fused(opt)
    amp = torch.bfloat16 if cfg.amp == "bf16" else None
    gen = torch.Generator().manual_seed(0)
    n = len(data.y_train)

    def go(k):
        setup_threads(cfg)  # per option: threads1 must not leak into the others
        for _ in range(k):
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
            xb, yb = make_batch(data, idx, cfg, gen)
            train_step(model, fwd, opt, xb, yb, cfg, 0.01, amp)
    t = time.perf_counter()
    go(warm)
    warm_s = time.perf_counter() - t
    return lambda: (lambda t0: (go(steps), steps * cfg.batch_size / (time.perf_counter() - t0))[1])(
        time.perf_counter()), warm_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--models", default="vgg3,combined")
    ap.add_argument("--options", default=",".join(OPTIONS), help="comma list of option names")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    args = ap.parse_args()
    opts = {k: OPTIONS[k] for k in args.options.split(",")}
    if args.compile:
        opts["compile"] = ["compile=true"]
    for name in args.models.split(","):
        base = {"vgg3": VGG3, "combined": COMBINED}[name]
        runners, warm = {}, {}
        for o, ov in opts.items():
            runners[o], warm[o] = run(bench_config(base, ov), args.steps, use_fused=o == "fused_sgd")
        res = {o: [] for o in opts}
        for _ in range(args.reps):
            for o in opts:
                res[o].append(runners[o]())
        ref = statistics.median(res[next(iter(opts))])
        print(f"\n{name}: batch 64, {args.steps} steps x {args.reps} reps, {torch.get_num_threads()} threads")
        print(f"{'option':<12} {'img/s':>7} {'spread':>13} {'ratio':>6} {'first 5 steps s':>15}")
        for o, v in res.items():
            m = statistics.median(v)
            print(f"{o:<12} {m:>7.0f} {min(v):>6.0f}-{max(v):<6.0f} {m / ref:>6.2f} {warm[o]:>15.1f}")


if __name__ == "__main__":
    main()
