"""Checkpoints that rebuild their own model, load on a CPU, never exist half-written and
never run code when loaded.

    save(run_dir / "checkpoint.pt", state)      # temp file + fsync + atomic rename
    state = load(run_dir / "checkpoint.pt")     # tensors land on the CPU
    model = model_from_checkpoint(state)        # rebuilt from state["config"]

A checkpoint holds tensors and plain Python values only, and is read with PyTorch's
weights-only unpickler: a file that would call anything else (code planted in a `.pt`
file) is refused with a CheckpointError, and nothing in it runs. Checkpoints that store
NumPy's RNG state as a NumPy array (written before it was stored as a tensor) still load:
the array type, its dtype and its unpickling helper are the only other things allowed.
A checkpoint records its format_version (runfolder.FORMAT_VERSION); one of a newer
format than this code reads is refused, one without it (older) loads as before. save()
adds the SHA-256 of the model's tensors and normalisation (DIGEST) and load() checks it: a
file whose weights changed on disk is a damaged checkpoint, not weights to predict with (a
checkpoint saved before they recorded it has none and loads as before).
"""
from __future__ import annotations

import hashlib
import pickle
import random
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import CifarlabError
from .runfolder import check_format
from .files import WriteError, atomic_write, atomic_write_text, make_readable  # noqa: F401 (re-exported)


class CheckpointError(CifarlabError, ValueError):
    """A checkpoint that cannot or must not be loaded; the message names the file. `damaged`:
    the file is unreadable (empty, truncated, garbled), not hostile or another program's."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message)
        self.damaged = damaged


DIGEST = "tensors_sha256"  # the key of a checkpoint's digest of its weights and normalisation


def tensors_sha256(state: dict) -> str:
    """SHA-256 of what a checkpoint's predictions depend on: every tensor of its model (name, dtype,
    shape and values, in the logical layout whatever the memory format) and its normalisation."""
    h = hashlib.sha256()
    for name in sorted(state["model"]):
        t = state["model"][name]
        if isinstance(t, torch.Tensor):
            h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{name} {t!r}\n".encode())
    h.update(repr(state.get("norm")).encode())
    return h.hexdigest()


def save(path: Path, state: dict) -> None:
    """Write `state` with the digest load() checks (DIGEST)."""
    state = {**state, DIGEST: tensors_sha256(state)}
    atomic_write(path, lambda f: torch.save(state, f))


def _allowed_globals() -> list:
    """What a checkpoint may name besides tensors and plain values: NumPy's RNG state as a
    uint32 array (the array, its dtype and dtype class, the helper that rebuilds it) and
    torch.__version__'s str subclass, as older checkpoints store them."""
    from torch.torch_version import TorchVersion
    core = getattr(np, "_core", None) or np.core
    rebuild = core.multiarray._reconstruct
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), TorchVersion,
            (rebuild, "numpy._core.multiarray._reconstruct"), (rebuild, "numpy.core.multiarray._reconstruct")]


def _first_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text.split(". ")[0].rstrip(".") if text else ""


def load(path: Path) -> dict:
    """The checkpoint at `path` as a dict, tensors on the CPU; CheckpointError for a file
    that is damaged, not a checkpoint, or would run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_allowed_globals()):
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # not a pickle at all, or garbled
            raise CheckpointError(f"{path}: cannot read this checkpoint ({_first_sentence(e)}); it is damaged "
                                  f"or not a cifarlab checkpoint", damaged=True) from None
        m = re.search(r"GLOBAL (\S+)", str(e))
        what = (f"it would call {m.group(1)}" if m
                else "it holds pickle operations no checkpoint holds: damaged, or not a checkpoint")
        raise CheckpointError(f"{path}: refused to load: not a plain checkpoint ({what}); nothing in it was run") \
            from None
    except Exception as e:
        reason = _first_sentence(e) or type(e).__name__
        if isinstance(e, EOFError):
            reason = "the file is empty or ends early"
        elif isinstance(e, KeyError):
            reason = "not a file torch.save wrote"
        raise CheckpointError(f"{path}: cannot read this checkpoint ({reason}); it is damaged or not a "
                              f"cifarlab checkpoint", damaged=True) from None
    if not isinstance(state, dict) or not {"config", "model"} <= state.keys():
        raise CheckpointError(f"{path}: not a cifarlab checkpoint (no config and model in it)")
    check_format(state, path, CheckpointError)
    _check_digest(path, state)
    return state


def _check_digest(path: Path, state: dict) -> None:
    """A checkpoint's weights and normalisation against the digest it was saved with; one saved
    before checkpoints recorded one (no DIGEST key) loads as before."""
    want = state.get(DIGEST)
    if want is None:
        return
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"{path}: cannot read this checkpoint (its model is not a dict of tensors); it "
                              f"is damaged or not a cifarlab checkpoint", damaged=True)
    try:
        got = tensors_sha256(state)
    except Exception as e:  # a tensor that cannot be read back as bytes
        got = f"unreadable ({_first_sentence(e)})"
    if got != want:
        raise CheckpointError(f"{path}: its weights or normalisation differ from the SHA-256 it was saved with "
                              f"(bits changed on disk or in a copy)", damaged=True)


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (NumPy's key as an int64 tensor)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (str(kind), torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, *rest = state["numpy"]
    if isinstance(key, torch.Tensor):
        key = key.numpy().astype(np.uint32)
    np.random.set_state((kind, key, *rest))
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


def read(path: Path) -> dict:
    """load(), with an empty, truncated or foreign file as one CheckpointError naming it
    (a missing one stays FileNotFoundError)."""
    path = Path(path)
    run = shlex.quote(str(path.parent))
    again = (f"restore it from a copy, or train the run again from its config: `cifarlab train --config "
             f"{run}/config.yaml --out {run} --force`")
    try:
        return load(path)
    except CheckpointError as e:
        if not e.damaged:
            raise  # hostile or foreign: nothing to restore it from
        detail = str(e).removeprefix(f"{path}: ")
        size = path.stat().st_size if path.is_file() else None
        what = "it is empty (0 bytes)" if size == 0 else "it is truncated or damaged"
        raise CheckpointError(f"{path}: cannot load the checkpoint, {what}: {detail}; {again}") from None
