"""cifarlab bench: training throughput of cifarlab's step, a plain PyTorch loop and Keras."""
from __future__ import annotations

import argparse
import json

from ..bench import throughput as bench
from ..bench.throughput import CONTENDERS
from ..files import atomic_write_text
from .common import add_device


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("bench", help=help,
                       description=bench.__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", help="comma list of: vgg3, combined (default both; none with --runs alone)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma list of: " + ", ".join(CONTENDERS))
    p.add_argument("--reps", type=int, default=5, help="alternating repetitions (default 5)")
    p.add_argument("--steps", type=int, default=50, help="steps of batch 64 per repetition (default 50)")
    p.add_argument("--subset", type=int, default=4000, help="training images used (default 4000)")
    add_device(p)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: this process's share of the cores, less those other work keeps busy)")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="time the contenders beside N busy processes (a Python loop each), as on a shared machine")
    p.add_argument("--peak-gflops", type=float, default=0.0, help="the device's fp32 peak; default: measure it")
    p.add_argument("--peak-bf16-gflops", type=float, default=0.0, help="the device's bf16 peak; default: measure it")
    p.add_argument("--no-peak", action="store_true", help="neither measure nor print the peak")
    p.add_argument("--no-eval", action="store_true", help="skip timing the test-set evaluation")
    p.add_argument("--keras-python", help="Python with TensorFlow for the Keras contender (default: this one)")
    p.add_argument("--plain-workers", type=int, default=0, help="DataLoader workers of the plain loop")
    p.add_argument("--runs", nargs="*", help="run folders: report their time to --target")
    p.add_argument("--target", type=float, default=0.88, help="accuracy for time-to-accuracy (default 0.88)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    result = bench.run(args, command=args.command_line)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0
