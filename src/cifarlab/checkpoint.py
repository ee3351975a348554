"""Checkpoints that rebuild their own model, load on a CPU, and never exist half-written.

    save(run_dir / "checkpoint.pt", state)      # temp file + fsync + atomic rename
    state = load(run_dir / "checkpoint.pt")     # tensors land on the CPU
    model = model_from_checkpoint(state)        # rebuilt from state["config"]
"""
from __future__ import annotations

import os
import random
import shlex
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import CifarlabError


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temp file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    make_readable(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_readable(path) -> None:
    """The usual permissions (0666 less the umask): mkstemp makes its files 0600, private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_from_checkpoint(state: dict) -> torch.nn.Module:
    from .config import from_dict
    from .models import build_model
    cfg = from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval()


class CheckpointError(CifarlabError):
    """A checkpoint file that cannot be loaded; the message names it."""


def read(path: Path) -> dict:
    """load(), with an empty, truncated or foreign file as one CheckpointError naming it
    (a missing one stays FileNotFoundError)."""
    path = Path(path)
    run = shlex.quote(str(path.parent))
    again = (f"restore it from a copy, or train the run again from its config: `cifarlab train --config "
             f"{run}/config.yaml --out {run} --force`")
    try:
        state = load(path)
    except (CifarlabError, FileNotFoundError):
        raise
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        size = path.stat().st_size if path.is_file() else None
        what = "it is empty (0 bytes)" if size == 0 else \
            f"it is truncated or damaged ({_reason(e)})"
        raise CheckpointError(f"{path}: cannot load the checkpoint, {what}; {again}") from None
    if not isinstance(state, dict) or not {"config", "model"} <= set(state):
        raise CheckpointError(f"{path}: not a cifarlab checkpoint (no config and model inside)")
    return state


def _reason(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for lines)."""
    text = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    return text or type(e).__name__
