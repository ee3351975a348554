"""The `cifarlab` command: one thin entry point per verb.

    cifarlab train --preset vgg3 epochs=2
    cifarlab train --resume runs/vgg3-20260101-120000
    cifarlab presets

Other verbs live beside the code they drive; each module listed in VERBS has
`add_parser(subparsers)` and sets `func` on its parser.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from pathlib import Path

from .errors import CifarlabError

VERBS = ["study", "report", "compare", "evaluate", "predict", "export", "tune", "bench"]  # modules that add their own sub-command


class UsageError(CifarlabError):
    """A mistake in the command line; printed without a traceback."""


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run into a run folder",
                       description="Train one run. Settings: a preset, a YAML config file, then key=value "
                                   "overrides (type-checked; an unknown key lists the valid ones).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="preset name (see `cifarlab presets`)")
    src.add_argument("--config", help="YAML config file (may say `base: PRESET`)")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--out", help="run folder (default: runs/NAME-TIMESTAMP); one that holds a run is refused")
    p.add_argument("--force", action="store_true",
                   help="start the run in --out over, deleting the run already there")
    p.add_argument("--data", help="CIFAR-10 folder or archive (default: $CIFARLAB_DATA, then the user cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar inside epochs")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_train)


def resolve_config(preset: str | None, config: str | None, overrides: list[str]):
    """Preset or file, then overrides; a run scaled away from its preset is marked not comparable."""
    from .config import apply_overrides, load_file, load_preset
    base = load_file(config) if config else load_preset(preset or "vgg3")
    cfg = apply_overrides(base, overrides)
    if cfg.epochs != base.epochs or cfg.subset != base.subset:
        cfg.comparable = False
    return cfg


def cmd_train(args) -> int:
    from .train import train
    if args.resume:
        if args.overrides:
            raise UsageError("--resume continues a run with its own config; overrides are not allowed")
        if args.force:
            raise UsageError("--resume continues a run and --force starts one over; give one of them")
        if not Path(args.resume).is_dir():
            raise UsageError(f"--resume {args.resume}: no such run folder")
        args.run_dir = args.resume
        train(None, args.resume, data_path=args.data, resume=True, progress=not args.quiet)
        return 0
    cfg = resolve_config(args.preset, args.config, args.overrides)
    out = args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.run_dir = out
    train(cfg, out, data_path=args.data, progress=not args.quiet, force=args.force)
    return 0


def _presets_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the presets with their reference accuracies")
    p.set_defaults(func=cmd_presets)


def cmd_presets(args) -> int:
    from .config import load_preset, preset_names
    print(f"{'preset':<22} {'epochs':>6} {'seed report':>11} {'article':>7}  description")
    for name in preset_names():
        c = load_preset(name)
        ref = c.reference
        f = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"{name:<22} {c.epochs:>6} {f(ref.get('seed_report')):>11} {f(ref.get('article')):>7}  "
              f"{c.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="cifarlab", description="Train and study CNNs on CIFAR-10.")
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    _train_parser(sub)
    _presets_parser(sub)
    for name in VERBS:
        importlib.import_module(f"cifarlab.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .files import WriteError
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # the command as typed, for messages that say how to run it again
    args.command_line = "cifarlab " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args) or 0
    except (CifarlabError, WriteError, FileNotFoundError) as e:
        print(f"cifarlab {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run = getattr(args, "run_dir", None)
        hint = (f"; it resumes with `cifarlab train --resume {shlex.quote(str(run))}`"
                if run and (Path(run) / "config.yaml").is_file() else "")
        print(f"\ncifarlab {args.verb}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
