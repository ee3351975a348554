"""A checkpoint that torch reads as weights-only but that lacks a checkpoint's structure ends in one
line naming the file and what is wrong, worded as damaged, exit status 2, with nothing created or
changed: weights that do not fit the network its config describes, entries of the wrong type or
range, and (for `train --resume` only) the optimiser state and RNG states a resume restores.

Each table row is (case, how the real checkpoint of tests/fixtures/run_v0_interrupted is altered,
the commands tried on it, fragments of the one line). The fixture records no digest, so the altered
file is refused by its structure, not by a digest; the last tests alter a checkpoint that has one and
recompute it.
"""
import hashlib
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cifarlab
from cifarlab import checkpoint
from cifarlab.errors import CifarlabError

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0_interrupted"
FILE = "checkpoint.pt"
MODEL = "evaluate", "predict", "export"  # read config, model and norm
ALL = MODEL + ("resume",)
COMMANDS = {  # R: the run folder, T: a folder that is not there
    "evaluate": ["evaluate", "R"],
    "predict": ["predict", "R", str(FIXTURE / "curves.png")],
    "export": ["export", "R", "--format", "safetensors", "--out", "T"],
    "resume": ["train", "--resume", "R", "--quiet"],
}
REFIT = "restore it from a copy, or train the run again"


def _set(*keys, value):
    def alter(state):
        d = state
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return alter


def _delete(*keys):
    def alter(state):
        d = state
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return alter


def _unexpected(state):
    for i in range(3):
        state["model"][f"extra.{i}.weight"] = torch.zeros(2)


def _reshaped(state):
    state["model"]["head.3.weight"] = torch.zeros(10, 9)


def _other_widths(state):  # the config of a wider network than the weights were trained as
    state["config"]["widths"] = [8]


def _fewer_params(state):  # an optimiser state of another network (one parameter fewer)
    state["optimizer"]["param_groups"][0]["params"] = state["optimizer"]["param_groups"][0]["params"][:-1]


def _numpy_key_short(state):
    kind, key, *rest = state["rng"]["numpy"]
    state["rng"]["numpy"] = (kind, key[:10], *rest)


CASES = [
    # weights that do not fit the network of the config
    ("missing_key", _delete("model", "features.0.bias"), ALL,
     ["its weights do not fit the network its config describes", "1 missing (features.0.bias)", REFIT]),
    ("unexpected_keys", _unexpected, ("evaluate", "resume"),
     ["its weights do not fit", "3 unexpected (extra.0.weight, extra.1.weight, ...)"]),
    ("misshaped", _reshaped, ("predict", "resume"),
     ["its weights do not fit", "1 of another shape (head.3.weight [10, 9] where the network has [10, 8])"]),
    ("config_of_another_network", _other_widths, MODEL,
     ["its weights do not fit", "5 of another shape (features.0.weight [4, 3, 3, 3] where the network has "
                                "[8, 3, 3, 3], features.0.bias [4] where the network has [8], ...)"]),
    # the model's weights
    ("model_list", _set("model", value=[torch.zeros(2)]), ("evaluate", "resume"),
     ["damaged", "its model is [tensor([0., 0.])], not a dict of tensors"]),
    ("model_empty", _set("model", value={}), ("predict",), ["damaged", "its model is {}, not a dict of tensors"]),
    ("model_value_string", _set("model", "head.1.bias", value="x"), ("export", "resume"),
     ["damaged", "its model's 'head.1.bias' is 'x', not a tensor"]),
    # the saved config
    ("config_list", _set("config", value=[1, 2]), ALL, ["damaged", "its config is [1, 2], not the run's settings"]),
    ("config_int", _set("config", value=3), ("evaluate", "resume"), ["damaged", "its config is 3, not the run's"]),
    # the normalisation
    ("norm_string", _set("norm", value="scale"), ALL,
     ["its normalisation is damaged ('scale': not a mean and std of 3 numbers each)"]),
    ("norm_short_mean", _set("norm", "mean", value=[0.0, 0.0]), ("predict",),
     ["its normalisation is damaged", "not a mean and std of 3 numbers each"]),
    ("norm_string_std", _set("norm", "std", value=["1", "1", "1"]), ("export",),
     ["its normalisation is damaged", "not a mean and std of 3 numbers each"]),
    ("norm_inf_std", _set("norm", "std", value=[1.0, math.inf, 1.0]), ("evaluate",),
     ["its normalisation is damaged (mean [0.0, 0.0, 0.0], std [1.0, inf, 1.0]: each must be finite"]),
    ("norm_zero_std", _set("norm", "std", value=[1.0, 0.0, 1.0]), ("resume",),
     ["its normalisation is damaged", "each std above 0"]),
    # the epoch count
    ("epoch_string", _set("epoch", value="one"), ALL, ["damaged", "its epoch is 'one', not a count"]),
    ("epoch_negative", _set("epoch", value=-1), ("evaluate", "resume"), ["damaged", "its epoch is -1, not a count"]),
    ("epoch_bool", _set("epoch", value=True), ("predict", "resume"), ["damaged", "its epoch is True, not a count"]),
    # what a resume restores besides the weights
    ("no_optimizer", _delete("optimizer"), ("resume",),
     ["cannot resume from it: it holds no optimizer", "evaluate, predict and export",
      "full checkpoint restored from a copy, or train the run again"]),
    ("no_rng", _delete("rng"), ("resume",), ["cannot resume from it: it holds no rng"]),
    ("optimizer_string", _set("optimizer", value="sgd"), ("resume",),
     ["damaged", "its optimizer state is 'sgd', not an optimiser's state_dict"]),
    ("optimizer_of_another_network", _fewer_params, ("resume",),
     ["its optimizer state does not fit the run its config describes", REFIT]),
    ("rng_not_bytes", _set("rng", "torch", value=torch.zeros(5056, dtype=torch.int64)), ("resume",),
     ["damaged", "its torch RNG state is not one (a tensor of int64, shape [5056], not a ByteTensor)"]),
    ("rng_wrong_size", _set("rng", "torch", value=torch.zeros(10, dtype=torch.uint8)), ("resume",),
     ["damaged", "its torch RNG state is not one"]),
    ("rng_list", _set("rng", value=[1, 2]), ("resume",), ["damaged", "its RNG state is [1, 2]"]),
    ("rng_numpy_short", _numpy_key_short, ("resume",), ["damaged", "its numpy RNG state is not one"]),
    ("rng_python_int", _set("rng", "python", value=3), ("resume",), ["damaged", "its python RNG state is not one"]),
    ("history_dict", _set("history", value={}), ("resume",), ["damaged", "its history is {}, not a list of records"]),
    ("wall_seconds_nan", _set("wall_seconds", value=math.nan), ("resume",),
     ["damaged", "its wall_seconds is nan, not seconds"]),
]
RUNS = [(name, alter, verb, words) for name, alter, verbs, words in CASES for verb in verbs]


def _damaged_run(tmp_path: Path, alter) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    state = torch.load(run / FILE, weights_only=True)
    assert checkpoint.DIGEST not in state  # refused below by its structure, not by a digest
    alter(state)
    torch.save(state, run / FILE)
    torch.load(run / FILE, weights_only=True)  # still a weights-only file: only its structure is wrong
    return run


def _tree(root: Path) -> dict:
    """Every file under root with its bytes' digest and mtime (the run's lock file, which --resume takes, aside)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _error_line(p) -> str:
    lines = [line for line in p.stderr.strip().splitlines() if not line.startswith("Matplotlib is building")]
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("name,alter,verb,words", RUNS, ids=[f"{r[0]}-{r[2]}" for r in RUNS])
def test_a_checkpoint_without_a_checkpoints_structure_is_one_line(tmp_path, data_dir, name, alter, verb, words):
    run = _damaged_run(tmp_path, alter)
    before = _tree(tmp_path)
    args = [a.replace("R", str(run)) if a == "R" else a.replace("T", str(tmp_path / "export")) if a == "T" else a
            for a in COMMANDS[verb]]
    p = subprocess.run([sys.executable, "-m", "cifarlab", *args], capture_output=True, text=True, timeout=300)
    line = _error_line(p)
    assert p.returncode == 2, p.stdout + p.stderr
    assert str(run / FILE) in line and all(w in line for w in words), line
    assert "hostile" not in line
    assert _tree(tmp_path) == before  # nothing created (no export folder, no evaluation.json), nothing changed


# --- in-process: cifarlab.load and the checks themselves --------------------------------------

LOADS = [(name, alter, words) for name, alter, verbs, words in CASES if "predict" in verbs]


@pytest.mark.parametrize("name,alter,words", LOADS, ids=[r[0] for r in LOADS])
def test_cifarlab_load_refuses_it_in_one_line(tmp_path, name, alter, words):
    run = _damaged_run(tmp_path, alter)
    before = _tree(tmp_path)
    with pytest.raises(CifarlabError) as e:
        cifarlab.load(run)
    msg = str(e.value)
    assert "\n" not in msg and str(run / FILE) in msg and all(w in msg for w in words), msg
    assert _tree(tmp_path) == before


def test_a_checkpoint_without_optimizer_or_rng_state_still_predicts(tmp_path):
    """Kept for inference only, a checkpoint needs its config, weights and normalisation: evaluate, predict
    and export read it; only a resume (above) refuses it."""
    run = _damaged_run(tmp_path, lambda s: [s.pop(k) for k in ("optimizer", "rng", "history", "wall_seconds")])
    full = cifarlab.load(FIXTURE)
    model = cifarlab.load(run)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.net(x), full.net(x)) and model.norm == full.norm


def test_the_structure_is_checked_after_a_digest_that_matches(tmp_path):
    """A checkpoint with its digest, altered where the digest does not look (the epoch) and with the
    digest recomputed by checkpoint.tensors_sha256: the structure check is what refuses it."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    state = torch.load(run / FILE, weights_only=True)
    state["epoch"] = "one"
    torch.save({**state, checkpoint.DIGEST: checkpoint.tensors_sha256(state)}, run / FILE)
    with pytest.raises(checkpoint.CheckpointError, match="its epoch is 'one', not a count") as e:
        checkpoint.read(run / FILE)
    assert e.value.damaged and "it is damaged" in str(e.value) and "SHA-256" not in str(e.value)


def test_weights_that_do_not_fit_are_one_line_from_model_from_checkpoint(tmp_path):
    state = checkpoint.load(FIXTURE / FILE)
    del state["model"]["features.0.bias"]
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.model_from_checkpoint(state, FIXTURE / FILE)
    assert str(e.value).startswith(f"{FIXTURE / FILE}: its weights do not fit the network its config describes "
                                   f"(1 missing (features.0.bias)); ") and "\n" not in str(e.value)


@pytest.mark.parametrize("version", [0, 1])
def test_checkpoints_of_formats_0_and_1_without_a_digest_load(tmp_path, version):
    """Format 1 began before checkpoints recorded their digest: a format 1 file without one is a checkpoint
    of those versions, not a damaged one, and loads (as format 0 files do); one with a digest is checked."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    state = torch.load(run / FILE, weights_only=True)
    if version:
        state["format_version"] = version
    torch.save(state, run / FILE)
    assert checkpoint.DIGEST not in checkpoint.load(run / FILE, checkpoint.RESUME)
    assert cifarlab.load(run).norm == state["norm"]
    state["norm"] = {"mean": [0.5] * 3, "std": [1.0] * 3}  # changed after its digest was taken
    torch.save({**state, checkpoint.DIGEST: checkpoint.tensors_sha256({**state, "norm": {"mean": [0.0] * 3,
                                                                                         "std": [1.0] * 3}})},
               run / FILE)
    with pytest.raises(checkpoint.CheckpointError, match="differ from the SHA-256 it was saved with"):
        checkpoint.load(run / FILE)
