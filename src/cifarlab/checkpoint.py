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
checkpoint saved before they recorded it has none and loads as before). load() then checks
the checkpoint's structure (check_structure): what the caller needs (`need`: MODEL for
evaluate, predict and export, RESUME for `train --resume`) must be there, of its type and
range; a file without it is damaged, one line naming the file and what is wrong. Weights
that do not fit the network its config describes are one line too (load_weights).
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

    def __init__(self, message: str, damaged: bool = False, what: str = ""):
        super().__init__(message)
        self.damaged = damaged
        self.what = what  # for a file that holds all its bytes but not a checkpoint's structure: what is wrong


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


MODEL = ("config", "model", "norm", "epoch")  # what evaluate, predict and export read
RESUME = MODEL + ("optimizer", "rng", "history", "wall_seconds", "step", "segments")  # and what a resume does
NEEDED_FOR_RESUME = ("optimizer", "rng", "history", "epoch", "wall_seconds")  # a checkpoint kept for
# inference only may lack these; a resume cannot do without them


def load(path: Path, need: tuple = MODEL) -> dict:
    """The checkpoint at `path` as a dict, tensors on the CPU; CheckpointError for a file
    that is damaged, not a checkpoint, or would run code, or lacks what `need` names
    (check_structure)."""
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
    check_structure(path, state, need)
    return state


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fault(state: dict, key: str) -> str | None:
    """What is wrong with state[key] (present), or None: its type and range as save() writes it."""
    v = state[key]
    if key == "config":
        return None if isinstance(v, dict) else f"its config is {_shown(v)}, not the run's settings"
    if key == "model":
        if not isinstance(v, dict) or not v:
            return f"its model is {_shown(v)}, not a dict of tensors"
        bad = next((k for k, t in v.items() if not isinstance(k, str) or not isinstance(t, torch.Tensor)), None)
        return None if bad is None else f"its model's {bad!r} is {_shown(v[bad])}, not a tensor"
    if key == "norm":  # None: none recorded, as with none saved (readers fall back to summary.json)
        if v is None:
            return None
        if not isinstance(v, dict) or not all(
                isinstance(v.get(k), (list, tuple)) and len(v[k]) == 3 and all(map(_number, v[k]))
                for k in ("mean", "std")):
            return f"its normalisation is damaged ({_shown(v)}: not a mean and std of 3 numbers each)"
        if not (all(np.isfinite(v["mean"])) and all(np.isfinite(v["std"])) and all(x > 0 for x in v["std"])):
            return (f"its normalisation is damaged (mean {list(v['mean'])}, std {list(v['std'])}: each must be "
                    f"finite, each std above 0)")
        return None
    if key in ("epoch", "step"):
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else \
            f"its {key} is {_shown(v)}, not a count"
    if key == "wall_seconds":
        return None if _number(v) and np.isfinite(v) and v >= 0 else f"its wall_seconds is {_shown(v)}, not seconds"
    if key == "optimizer":
        if isinstance(v, dict) and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list) \
                and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in v["param_groups"]):
            return None
        return f"its optimizer state is {_shown(v)}, not an optimiser's state_dict"
    if key in ("history", "segments"):
        if isinstance(v, list) and all(isinstance(r, dict) for r in v):
            return None
        return f"its {key} is {_shown(v)}, not a list of records"
    if key == "rng":
        return _rng_fault(v)
    return None


def _rng_fault(v) -> str | None:
    """What keeps `v` from being the generators' states rng_state() saves, tried on generators of
    its own (the process's are left as they are)."""
    if not isinstance(v, dict) or not {"torch", "numpy", "python"} <= v.keys():
        return f"its RNG state is {_shown(v)}, not the torch, numpy and python generators' states"
    where = "torch"
    try:
        if not isinstance(v["torch"], torch.Tensor) or v["torch"].dtype != torch.uint8:
            raise TypeError(f"{_shown(v['torch'])}, not a ByteTensor")
        torch.Generator().set_state(v["torch"])
        where = "numpy"
        kind, key, *rest = v["numpy"]
        if isinstance(key, torch.Tensor):
            key = key.numpy().astype(np.uint32)
        np.random.RandomState().set_state((kind, key, *rest))
        where = "python"
        random.Random().setstate(v["python"])
        where = "cuda"
        cuda = v.get("cuda", [])
        if not isinstance(cuda, (list, tuple)) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8
                                                          for t in cuda):
            raise TypeError(f"{_shown(cuda)}, not a list of ByteTensors")
    except Exception as e:
        return f"its {where} RNG state is not one ({_first_sentence(e) or type(e).__name__})"
    return None


def _shown(v) -> str:
    """A value as a message names it: short, one line."""
    if isinstance(v, torch.Tensor):
        return f"a tensor of {str(v.dtype).removeprefix('torch.')}, shape {list(v.shape)}"
    text = " ".join(repr(v).split())
    if isinstance(v, (dict, list, tuple)) and len(text) > 40:
        return f"a {type(v).__name__} of {len(v)}"
    return text if len(text) <= 40 else f"a {type(v).__name__}"


def check_structure(path: Path, state: dict, need: tuple = MODEL) -> None:
    """Refuse a checkpoint (read from `path`) whose entries among `need` are not what save() writes:
    a damaged CheckpointError naming the file and the entry. For a resume (need=RESUME) the entries
    a resume restores must be there; a checkpoint without them (kept for inference) is refused saying
    so, and still loads for evaluate, predict and export."""
    for key in need:
        if key in state:
            what = _fault(state, key)
            if what is not None:
                raise CheckpointError(f"{path}: {what}", damaged=True, what=what)
    if need == RESUME:
        missing = [k for k in NEEDED_FOR_RESUME if k not in state]
        if missing:
            run = shlex.quote(str(path.parent))
            raise CheckpointError(
                f"{path}: cannot resume from it: it holds no {' and no '.join(missing)} (a checkpoint kept for "
                f"evaluate, predict and export only?); resume from the run's full checkpoint restored from a "
                f"copy, or train the run again: `cifarlab train --config {run}/config.yaml --out {run} --force`")


def _check_digest(path: Path, state: dict) -> None:
    """A checkpoint's weights and normalisation against the digest it was saved with; one saved
    before checkpoints recorded one (no DIGEST key) loads as before. Its absence is not damage at
    format_version 1: that format began before the digest did, and its files without one are
    checkpoints of those versions (a format that always carries it could refuse its absence)."""
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


def model_from_checkpoint(state: dict, path: Path | None = None) -> torch.nn.Module:
    """The network `state`'s config describes, with its weights (load_weights: one CheckpointError
    naming `path` for weights that do not fit)."""
    from .config import from_dict
    from .models import build_model
    cfg = from_dict(state["config"])
    model = build_model(cfg)
    load_weights(model, state["model"], path)
    return model.eval()


def _named(keys: list, what: str) -> str:
    shown = ", ".join(keys[:2]) + (", ..." if len(keys) > 2 else "")
    return f"{len(keys)} {what} ({shown})"


def load_weights(model: torch.nn.Module, weights: dict, path: Path | None = None) -> None:
    """model.load_state_dict(weights), strict; weights that do not fit the network (keys missing,
    unexpected or of another shape) are one CheckpointError naming the file, how many keys of each
    kind with the first ones, and what to do (never load_state_dict's message of many lines)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {list(weights[k].shape)} where the network has {list(own[k].shape)}" for k in own
              if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != own[k].shape]
    detail = "; ".join(_named(keys, what) for keys, what in
                       ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape")) if keys)
    if not detail:
        try:
            model.load_state_dict(weights)
            return
        except (RuntimeError, TypeError, ValueError) as e:  # what the counts above do not see
            detail = _first_sentence(str(e).replace("\n", " ").replace("\t", " "))
    where = f"{path}: " if path is not None else ""
    run = shlex.quote(str(Path(path).parent)) if path is not None else "RUN"
    raise CheckpointError(
        f"{where}its weights do not fit the network its config describes ({detail}); the file is damaged, or "
        f"its config or weights were edited: restore it from a copy, or train the run again: `cifarlab train "
        f"--config {run}/config.yaml --out {run} --force`", damaged=True)


def load_part(obj, state: dict, key: str, path: Path) -> None:
    """obj.load_state_dict(state[key]) for the optimiser, scaler or averager of a resumed run; a state
    missing or not fitting this run's (another optimiser, other parameters) is one CheckpointError."""
    try:
        obj.load_state_dict(state[key])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        why = "it holds none" if key not in state else _first_sentence(str(e).replace("\n", " ")) or type(e).__name__
        run = shlex.quote(str(Path(path).parent))
        raise CheckpointError(f"{path}: its {key} state does not fit the run its config describes ({why}); the "
                              f"file is damaged or was edited: restore it from a copy, or train the run again: "
                              f"`cifarlab train --config {run}/config.yaml --out {run} --force`", damaged=True) \
            from None


def read(path: Path, need: tuple = MODEL) -> dict:
    """load(), with an empty, truncated or foreign file as one CheckpointError naming it
    (a missing one stays FileNotFoundError)."""
    path = Path(path)
    run = shlex.quote(str(path.parent))
    again = (f"restore it from a copy, or train the run again from its config: `cifarlab train --config "
             f"{run}/config.yaml --out {run} --force`")
    try:
        return load(path, need)
    except CheckpointError as e:
        if not e.damaged:
            raise  # hostile or foreign: nothing to restore it from
        detail = str(e).removeprefix(f"{path}: ")
        size = path.stat().st_size if path.is_file() else None
        what = ("it is empty (0 bytes)" if size == 0 else "it is damaged" if e.what
                else "it is truncated or damaged")
        raise CheckpointError(f"{path}: cannot load the checkpoint, {what}: {detail}; {again}", damaged=True) \
            from None
