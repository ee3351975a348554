"""cifarlab train: one run into a run folder, from a preset, a config file or a checkpoint."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import resolve_config
from ..errors import UsageError
from .common import add_data


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("train", help=help,
                       description="Train one run. Settings: a preset, a YAML config file, then key=value "
                                   "overrides (type-checked; an unknown key lists the valid ones).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="preset name (see `cifarlab presets`)")
    src.add_argument("--config", help="YAML config file (may say `base: PRESET`)")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--out", help="run folder (default: runs/NAME-TIMESTAMP); one that holds a run is refused "
                                 "(--resume continues its run in place and takes no --out)")
    p.add_argument("--force", action="store_true",
                   help="start the run in --out over, deleting the run already there")
    add_data(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar inside epochs")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import torch  # loaded when a run starts, not for --help

    from ..train import train
    if args.resume:
        if args.overrides:
            raise UsageError("--resume continues a run with its own config; overrides are not allowed")
        if args.force:
            raise UsageError("--resume continues a run and --force starts one over; give one of them")
        if args.out:
            raise UsageError(f"--resume continues the run in {args.resume} in place; --out {args.out} names "
                             f"another folder. Drop --out (to train that config into a new folder: "
                             f"--config {Path(args.resume) / 'config.yaml'} --out {args.out})")
        if not Path(args.resume).is_dir():
            raise UsageError(f"--resume {args.resume}: no such run folder")
        args.run_dir = args.resume
        train(None, args.resume, data_path=args.data, resume=True, progress=not args.quiet,
              command=args.command_line)
        return 0
    cfg = resolve_config(args.preset, args.config, args.overrides)
    if cfg.sync_bn and cfg.device == "auto" and not torch.cuda.is_available():  # device=cpu: config.validate
        raise UsageError("sync_bn=true needs GPUs: torch's SyncBatchNorm does not run on the CPU, and this "
                         "machine has no GPU; use sync_bn=false")
    out = args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.run_dir = out
    train(cfg, out, data_path=args.data, progress=not args.quiet, force=args.force, command=args.command_line)
    return 0
