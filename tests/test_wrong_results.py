"""Wrong results never pass with exit status 0: a damaged checkpoint or normalisation, a diverged
run, a damaged data cache. Each ends in one line naming what is wrong and exit status 2, and
nothing is written (real files: the fixture run, real CIFAR-10)."""
import shutil
from pathlib import Path

import pytest
import torch

from cifarlab import cli

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0_interrupted"


def _flip_exponent(state):
    """One weight's exponent bits all set: the float becomes inf or NaN, as a flipped-bits disk error does."""
    w = state["model"]["features.0.weight"]
    bits = w.contiguous().view(torch.int32).reshape(-1).clone()
    bits[0] |= 0x7F800000
    state["model"]["features.0.weight"] = bits.view(torch.float32).reshape(w.shape)


def _zero_std(state):
    state["norm"]["std"] = [0.0, 0.0, 0.0]


def _nan_mean(state):
    state["norm"]["mean"] = [float("nan"), 0.0, 0.0]


DAMAGED = [  # (damage done to the checkpoint, what the one line says)
    (_flip_exponent, "outputs are not finite"),
    (_zero_std, "its normalisation is damaged"),
    (_nan_mean, "its normalisation is damaged"),
]


def _damaged_run(tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    damage(state)
    torch.save(state, run / "checkpoint.pt")
    return run


@pytest.mark.parametrize("damage,says", DAMAGED, ids=[d.__name__ for d, _ in DAMAGED])
@pytest.mark.parametrize("verb", ["predict", "evaluate"])
def test_non_finite_outputs_are_an_error_not_a_prediction(tmp_path, capsys, cifar, data_dir, damage, says, verb):
    run = _damaged_run(tmp_path, damage)
    before = sorted(p.name for p in run.iterdir())
    if verb == "predict":
        from PIL import Image
        image = tmp_path / "cat.png"
        Image.fromarray(cifar.x_test[0].transpose(1, 2, 0)).save(image)
        args = ["predict", str(run), str(image)]
    else:
        args = ["evaluate", str(run), "--data", str(data_dir)]
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and says in err and str(run / "checkpoint.pt") in err, err
    assert "nan" not in out.lower() and "%" not in out, out
    assert sorted(p.name for p in run.iterdir()) == before  # no evaluation.json, no confusion.png
