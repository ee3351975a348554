"""cifarlab tune: a hyperparameter search on Ray Tune, each trial a cifarlab run."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..study import tune
from ..config import resolve_config
from ..errors import UsageError
from ..study.tune import (SearchOptions, check_asha, check_resources, default_val_split, format_table, parse_param,
                          run_search)
from .common import add_data


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("tune", help=help,
                       description="Search hyperparameters of PRESET on Ray Tune; each trial is a cifarlab run "
                                   "validated on held-out training images. Writes OUT/tune.csv and OUT/best.yaml.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Search-space syntax" + tune.__doc__.split("Search-space syntax", 1)[1])
    # one positional list: argparse cannot take a second one after options
    p.add_argument("args", nargs="+", metavar="PRESET [key=value ...]",
                   help="preset name or YAML config file, then fixed settings for every trial")
    p.add_argument("--param", action="append", default=[], metavar="KEY=SPACE",
                   help="a searched key, e.g. 'lr=loguniform(1e-4,1e-1)' (repeat for more)")
    p.add_argument("--samples", type=int, default=8, help="trials to sample (default 8)")
    p.add_argument("--epochs", type=int, help="epochs of a trial that is not stopped early")
    p.add_argument("--subset", type=int, help="train on a class-balanced subset of this many images")
    p.add_argument("--val-split", type=int, help="held-out validation images (default: a tenth of the training images)")
    p.add_argument("--out", help="output folder (default: tunes/PRESET-TIMESTAMP)")
    p.add_argument("--address", help="join this Ray cluster (HOST:PORT) instead of starting one here")
    p.add_argument("--cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs each trial holds (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0,
                   help="GPUs each trial holds, a fraction shares one (default 0)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--reduction-factor", type=float, default=2, help="ASHA: keep 1 in this many at each rung")
    p.add_argument("--baseline", action="store_true",
                   help="make the first trial the preset's own values (a reference at the same budget)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (the trials train with the preset's seed)")
    add_data(p)
    p.set_defaults(func=cmd_tune)


def _is_file(preset: str) -> bool:
    return preset.endswith((".yaml", ".yml")) or os.sep in preset


def tune_config(preset: str, overrides: list[str], epochs=None, subset=None, val_split=None):
    """The trials' base config: PRESET (a name or a YAML file), the fixed overrides, the budget options;
    without a val_split from any of them, a tenth of the training images is held out. That default is
    filled in before the config is checked, so that test=false (which needs a held-out split) is accepted."""
    budget = [f"{k}={v}" for k, v in (("epochs", epochs), ("subset", subset), ("val_split", val_split))
              if v is not None]

    def complete(cfg, given):
        if cfg.val_split == 0:
            if "val_split" in given:
                raise UsageError("tune validates on held-out training images; val_split must be above 0")
            cfg.val_split = default_val_split(cfg)

    return resolve_config(None if _is_file(preset) else preset, preset if _is_file(preset) else None,
                          overrides + budget, complete)


def cmd_tune(args) -> int:
    args.preset, args.overrides = args.args[0], args.args[1:]
    if "=" in args.preset:
        raise UsageError(f"the first argument is the preset (or a YAML file), not {args.preset!r}")
    if not args.param:
        raise UsageError("give at least one --param KEY=SPACE to search")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    params = [parse_param(s) for s in args.param]
    is_file = _is_file(args.preset)
    cfg = tune_config(args.preset, args.overrides, args.epochs, args.subset, args.val_split)
    check_asha(args.grace_period, args.reduction_factor, cfg.epochs)  # before Ray starts
    check_resources(args.cpus, args.cpus_per_trial, args.gpus_per_trial, args.address)
    cfg.threads = cfg.threads or max(1, int(args.cpus_per_trial))
    cfg.checkpoint_every = 1  # Tune's trial checkpoints are the run's per-epoch checkpoints
    out = Path(args.out or f"tunes/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    data = args.data or os.environ.get("CIFARLAB_DATA")
    data = str(Path(data).resolve()) if data else None
    print(f"tune {cfg.name}: {args.samples} trials x up to {cfg.epochs} epochs, subset={cfg.subset or 'all'}, "
          f"validation on {cfg.val_split} held-out training images; searching "
          + ", ".join(args.param) + f" -> {out}", flush=True)
    opts = SearchOptions(args.address, args.cpus_per_trial, args.gpus_per_trial, args.grace_period,
                         args.reduction_factor, args.seed, data, args.cpus, args.baseline,
                         None if is_file else args.preset)
    rows = run_search(cfg, params, args.samples, out, opts)
    print(format_table(rows))
    print(f"table: {out / 'tune.csv'}   best config: {out / 'best.yaml'}  "
          f"(cifarlab train --config {out / 'best.yaml'})")
    return 0
