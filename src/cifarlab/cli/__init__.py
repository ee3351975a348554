"""The `cifarlab` command: one module per verb in this package, each with
`add_parser(subparsers, help)` that sets `func` on its parser.

    cifarlab train --preset vgg3 epochs=2
    cifarlab train --resume runs/vgg3-20260101-120000
    cifarlab presets

Only the verb being run has its module imported, so `cifarlab --help` and `cifarlab
presets` load neither torch nor matplotlib. The command applies the engine settings of
`cifarlab.runtime` before anything loads torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

from .. import interrupt, runtime
from ..errors import CifarlabError
from .common import check_data

# verb -> its one-line help; the verb's parser and function are in cifarlab.cli.<verb>
COMMANDS = {
    "train": "train one run into a run folder",
    "presets": "list the presets with their reference accuracies",
    "study": "run presets x seeds into one study folder (resumable)",
    "report": "write report.html and report.md for a study folder",
    "carry": "carry a study's records and unfinished runs out of a study folder, or into one",
    "compare": "compare run folders: grouped by settings, tested, drawn",
    "evaluate": "test accuracy, per-class accuracy and confusion matrix of a run",
    "predict": "predict the class of image files",
    "export": "export a run's model as ONNX or safetensors",
    "tune": "hyperparameter search on Ray Tune (ASHA early stopping)",
    "bench": "training throughput: cifarlab vs a plain PyTorch loop vs Keras",
}


def build_parser(verbs=None) -> argparse.ArgumentParser:
    """The command's parser, with full sub-parsers for `verbs` (default: all of them) and
    a one-line entry for each other verb."""
    from .. import __version__
    parser = argparse.ArgumentParser(prog="cifarlab", description="Train and study CNNs on CIFAR-10.")
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for name, help in COMMANDS.items():
        if verbs is None or name in verbs:
            importlib.import_module(f"cifarlab.cli.{name}").add_parser(sub, help)
        else:
            sub.add_parser(name, help=help)
    return parser


def _verb(argv: list[str]) -> str | None:
    """The verb typed (the command's own options are all flags without a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    runtime.apply()  # before torch loads: OpenMP waiting and malloc (cifarlab/runtime.py)
    from ..files import WriteError
    typed = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser([_verb(typed)])
    args, extra = parser.parse_known_args(typed)
    # key=value overrides written after an option (train --out DIR epochs=2 --quiet lr=0.1) are overrides too
    if extra and isinstance(getattr(args, "overrides", None), list) \
            and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra
    elif extra:  # one line, from the verb, saying where key=value settings go
        verb = getattr(args, "verb", None)
        where = (f"; see `cifarlab {verb} --help` (key=value overrides may come before or after options)"
                 if isinstance(getattr(args, "overrides", None), list)
                 else f"; see `cifarlab {verb} --help`" if verb else "")
        print(f"cifarlab{' ' + verb if verb else ''}: error: unrecognized arguments: {' '.join(extra)}{where}",
              file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # the command as typed: recorded in what it writes, and quoted by messages that say how to run it again
    args.command_line = "cifarlab " + shlex.join(typed)
    previous = interrupt.install()  # Ctrl-C told apart from an error it turns into (interrupt.py)
    try:
        check_data(getattr(args, "data", None))
        return args.func(args) or 0
    except KeyboardInterrupt:
        return _interrupted(args)
    except (CifarlabError, WriteError, FileNotFoundError, PermissionError) as e:
        if interrupt.seen():
            return _interrupted(args)
        # a file or folder this user may not read or write: the path and what to do, never a traceback
        why = permission_line(e) if isinstance(e, PermissionError) else e
        print(f"cifarlab {args.verb}: error: {why}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped reading (`cifarlab presets | head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and no second error at exit
        return 1
    except Exception:
        if interrupt.seen():  # Ctrl-C inside an import, say, that reached here as ImportError
            return _interrupted(args)
        raise
    finally:
        interrupt.restore(previous)
        interrupt.reset()


def permission_line(e: PermissionError) -> str:
    """One line for a PermissionError: the path, and what to do about it."""
    path = e.filename2 or e.filename
    if path is None:
        return f"permission denied ({e}); run cifarlab as a user that may read and write the paths given"
    return (f"{path}: permission denied to this user; give it access (`ls -ld {shlex.quote(str(path))}` shows "
            f"who may) or give cifarlab another path")


def _interrupted(args) -> int:
    run = getattr(args, "run_dir", None)
    hint = ""
    if run and (Path(run) / "config.yaml").is_file():  # its settings are saved: --resume keeps them
        first = "" if (Path(run) / "checkpoint.pt").is_file() else \
            " (no checkpoint yet: from epoch 1, with the preset and overrides saved in its config.yaml)"
        hint = f"; it resumes with `cifarlab train --resume {shlex.quote(str(run))}`{first}"
    elif run and not getattr(args, "resume", None):  # stopped before the run began: nothing to resume
        hint = f"; it stopped before the run started (nothing to resume): start it again with `{args.command_line}`"
    print(f"\ncifarlab {args.verb}: interrupted{hint}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
