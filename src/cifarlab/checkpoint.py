"""Checkpoints that rebuild their own model, load on a CPU, and never exist half-written.

    save(run_dir / "checkpoint.pt", state)      # temp file + fsync + atomic rename
    state = load(run_dir / "checkpoint.pt")     # tensors land on the CPU
    model = model_from_checkpoint(state)        # rebuilt from state["config"]
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


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
