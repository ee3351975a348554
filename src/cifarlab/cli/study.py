"""cifarlab study: presets x seeds into one study folder; re-running resumes it."""
from __future__ import annotations

import math
import re
import sys

from ..config import ConfigError, parse_overrides
from ..errors import UsageError
from ..study.forecast import plan_study
from ..study.jobs import QUICK_EPOCHS_SCALE, QUICK_OVERRIDES, QUICK_SEEDS, StudyError, parse_only
from ..study.runner import BACKEND_OPTIONS, BACKENDS, ORDERS, PROBLEMS, StudyOptions, run_study
from .common import add_data


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("study", help=help,
                       description="Run every (preset, seed) pair into STUDY_DIR/runs/PRESET/seedK. "
                                   "Re-running the same command skips finished runs and resumes "
                                   "interrupted ones.")
    p.add_argument("--only", help="comma-separated presets (default: all, in the study's order); PRESET:N "
                                  "gives that preset N seeds of its own (vgg3:3,combined)")
    p.add_argument("--seeds", type=int, help=f"seeds per preset, 0..N-1 (default 1; --quick: {QUICK_SEEDS})")
    p.add_argument("--workers", type=int, default=1, help="parallel runs; CPU threads are divided among them")
    p.add_argument("--order", choices=ORDERS, default="auto",
                   help="the order runs are handed to the workers: longest (most training left first, so "
                        "the study ends sooner), study (the study's order); auto (default): longest on "
                        "several workers, study on one")
    p.add_argument("--stop-after", metavar="DURATION",
                   help="stop once this much time is spent (2h30m, 45m, 90s): every run in progress ends its "
                        "epoch with its checkpoint written, no further run starts, and the command exits 0 "
                        "saying how to continue")
    p.add_argument("--out", help="study folder (default: studies/quick with --quick, else studies/full)")
    p.add_argument("--quick", action="store_true",
                   help=f"pipeline check: {' '.join(QUICK_OVERRIDES)}, epochs x {QUICK_EPOCHS_SCALE}, "
                        f"{QUICK_SEEDS} seeds")
    p.add_argument("--epochs-scale", type=float, help="multiply every preset's epochs (and schedule lengths)")
    p.add_argument("--backend", default="local", help=f"how jobs run: {', '.join(BACKENDS)} (default local)")
    p.add_argument("--address", help="ray: join the Ray cluster at HOST:PORT (default: start one here)")
    p.add_argument("--gpus-per-run", type=float, help="ray: GPUs each run holds; 0.25 packs 4 runs on a GPU")
    add_data(p)
    p.add_argument("--plan", action="store_true",
                   help="run nothing: list the runs, time each network here for a few seconds, and project "
                        "the hours per run and for the whole study on --workers")
    p.add_argument("--plan-seconds", type=float, default=3.0, help="--plan: seconds to time each network")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every run")
    p.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    scale = args.epochs_scale if args.epochs_scale is not None else (QUICK_EPOCHS_SCALE if args.quick else 1.0)
    seeds = args.seeds if args.seeds is not None else (QUICK_SEEDS if args.quick else 1)
    out = args.out or ("studies/quick" if args.quick else "studies/full")
    if args.epochs_scale is not None and not (math.isfinite(args.epochs_scale) and args.epochs_scale > 0):
        raise UsageError(f"--epochs-scale {args.epochs_scale}: must be a finite number above 0 "
                         f"(0.1: a tenth of each preset's epochs)")
    try:
        only, seeds_for = parse_only(args.only)
    except StudyError as e:
        raise UsageError(str(e)) from None
    if args.only is not None and not only:
        raise UsageError(f"--only {args.only!r} names no preset; give comma-separated presets (vgg1,vgg3) or "
                         f"leave --only out to run all of them")
    _check_sync_bn(overrides, args.backend)
    try:
        stop_after = parse_duration(args.stop_after) if args.stop_after is not None else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    given = {k: getattr(args, k) for k in ("address", "gpus_per_run") if getattr(args, k) is not None}
    wrong = [k for k in given if k not in BACKEND_OPTIONS.get(args.backend, ())]
    if wrong:
        raise UsageError(f"--{wrong[0].replace('_', '-')} is an option of --backend ray, not {args.backend}")
    if args.plan:
        return plan_study(only, seeds, args.workers, out, overrides, scale, args.data, args.plan_seconds,
                          seeds_for=seeds_for, order=args.order)
    try:
        opts = StudyOptions(seeds=seeds, seeds_for=seeds_for, overrides=overrides, epochs_scale=scale,
                            quick=args.quick, workers=args.workers, backend=args.backend, backend_options=given,
                            data_path=args.data, order=args.order, stop_after=stop_after,
                            command=args.command_line)
        results = run_study(only, out, opts)
    except StudyError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        again = getattr(args, "command_line", None) or f"cifarlab study --out {out} ..."
        print(f"\ncifarlab study: interrupted; every run stopped part-way resumes from its last checkpoint. "
              f"Continue with the same command: {again}", file=sys.stderr)
        return 130
    again = getattr(args, "command_line", None) or f"cifarlab study --out {out} ..."
    if any(r["status"] == "stopped" for r in results):
        left = [r for r in results if r["status"] == "stopped"]
        print(f"cifarlab study: stopped after --stop-after {args.stop_after}: {len(left)} run(s) not finished, "
              f"each resumable from its checkpoint. Continue with: {again}")
    if any(r["status"] == "deferred" for r in results):
        print("cifarlab study: runs begun in bf16 are left for a machine with native bf16 (listed above)")
    return 1 if any(r["status"] in PROBLEMS for r in results) else 0


def _check_sync_bn(overrides: list[str], backend: str) -> None:
    """sync_bn=true for runs on this machine, which has no GPU: refused before the study folder is made
    (device=cpu is refused by the config's own check; a Ray cluster's GPUs are elsewhere)."""
    try:
        given = parse_overrides(overrides)
    except ConfigError:
        return  # named, as before, where the runs' configs are resolved
    if backend != "local" or given.get("sync_bn") is not True or given.get("device", "auto") != "auto":
        return
    import torch  # here: the verb's help and parsing load no torch
    if not torch.cuda.is_available():
        raise UsageError("sync_bn=true needs GPUs: torch's SyncBatchNorm does not run on the CPU, and this "
                         "machine has no GPU; use sync_bn=false")


DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """"2h30m" -> 9000.0, "45m", "90s", "1.5h"; a plain number is seconds. ValueError names what is wrong."""
    t = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        seconds = float(t)
    elif parts and "".join(n + u for n, u in parts) == t and len({u for _, u in parts}) == len(parts):
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    else:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"--stop-after {text!r}: write a duration above 0 such as 2h30m, 45m, 90s or 1.5h")
    return seconds
