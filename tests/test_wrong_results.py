"""Wrong results never pass with exit status 0: a damaged checkpoint or normalisation, a diverged
run, a damaged data cache. Each ends in one line naming what is wrong and exit status 2, and
nothing is written (real files: the fixture run, real CIFAR-10)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cifarlab
from cifarlab import checkpoint, cli, data as D
from cifarlab.inference.predict import ModelError

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


# --- the decoded-array cache ---------------------------------------------------------------

def _all_labels_zero(a):
    a["y_test"] = np.zeros_like(a["y_test"])
    a["y_train"] = np.zeros_like(a["y_train"])


def _labels_swapped(a):  # class counts unchanged: only the digest tells
    a["y_test"] = a["y_test"].copy()
    a["y_test"][[0, 1]] = a["y_test"][[1, 0]]


def _label_out_of_range(a):
    a["y_test"] = a["y_test"].copy()
    a["y_test"][0] = 10


def _one_pixel(a):
    a["x_train"] = a["x_train"].copy()
    a["x_train"][0, 0, 0, 0] ^= 1


def _labels_int32(a):
    a["y_train"] = a["y_train"].astype(np.int32)


CACHES = [  # (damage done to a cache of the real arrays, what the stderr line says)
    (_all_labels_zero, "training labels [50000, 0, 0, 0, 0, 0, 0, 0, 0, 0] of each class"),
    (_labels_swapped, "differ from those the official files decode to"),
    (_label_out_of_range, "test labels from 0 to 10, outside 0-9"),
    (_one_pixel, "differ from those the official files decode to"),
    (_labels_int32, "dtypes"),
]


def test_the_official_files_decode_to_the_arrays_of_the_recorded_digest(cifar):
    assert D.arrays_sha256(cifar) == D.BIN_ARRAYS_SHA256 and D.arrays_fault(cifar) is None


@pytest.mark.slow
@pytest.mark.parametrize("damage,says", CACHES, ids=[d.__name__ for d, _ in CACHES])
def test_a_cache_that_is_not_the_official_arrays_is_rebuilt(tmp_path, monkeypatch, capsys, cifar, data_dir,
                                                           damage, says):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    arrays = {k: getattr(cifar, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    damage(arrays)
    cache = D._cache_file(D.BIN_KEY)
    cache.parent.mkdir(parents=True)
    np.savez(cache, **arrays)
    ds = D.load_cifar10(data_dir, download_ok=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the decoded-array cache {cache} is damaged" in err and says in err, err
    assert D.arrays_sha256(ds) == D.BIN_ARRAYS_SHA256  # the real arrays, decoded again from the files
    with np.load(cache) as z:  # and the cache rebuilt with them
        assert all(np.array_equal(z[k], getattr(cifar, k)) for k in arrays)
    D.load_cifar10(data_dir, download_ok=False)
    assert capsys.readouterr().err == ""  # the rebuilt cache is used as it is


@pytest.mark.slow
def test_files_whose_labels_are_out_of_range_are_one_error_not_an_index_error(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / D.BIN_DIR
    folder.mkdir()
    md5s = {}
    for name in D.BIN_MD5:
        raw = np.fromfile(data_dir / name, dtype=np.uint8)
        if name == "test_batch.bin":
            raw[0] = 12  # the first record's label byte
        raw.tofile(folder / name)
        md5s[name] = D.md5sum(folder / name)
    with pytest.raises(D.DataError, match=r"decode to test labels from 0 to 12, outside 0-9; they are not CIFAR-10"):
        D.read_bin_folder(folder, md5s)
    assert not (tmp_path / "cache").exists()  # nothing cached


# --- a checkpoint's digest -----------------------------------------------------------------

def _resaved(tmp_path, damage=None):
    """The fixture's checkpoint saved again by checkpoint.save (so with its digest), then damaged as a disk
    would damage it (the file rewritten with changed tensors, its recorded digest kept)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    checkpoint.save(run / "checkpoint.pt", torch.load(run / "checkpoint.pt", weights_only=False))
    if damage is not None:
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        damage(state)
        torch.save(state, run / "checkpoint.pt")
    return run


def _last_bit(state):  # the lowest mantissa bit of the last weight: a change no finiteness check sees
    w = state["model"]["head.3.weight"]
    bits = w.contiguous().view(torch.int32).reshape(-1).clone()
    bits[-1] ^= 1
    state["model"]["head.3.weight"] = bits.view(torch.float32).reshape(w.shape)


def _std(state):
    state["norm"]["std"] = [1e-4] * 3


DIGESTED = [_flip_exponent, _last_bit, _std, _zero_std]


@pytest.mark.parametrize("damage", DIGESTED, ids=[d.__name__ for d in DIGESTED])
def test_a_checkpoint_whose_tensors_changed_is_damaged(tmp_path, capsys, damage):
    run = _resaved(tmp_path, damage)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(checkpoint.CheckpointError, match="differ from the SHA-256 it was saved with") as e:
        cifarlab.load(run)
    assert str(run / "checkpoint.pt") in str(e.value) and "damaged" in str(e.value)
    assert cli.main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated or damaged" in err and "hostile" not in err, err
    assert sorted(p.name for p in run.iterdir()) == before


def test_checkpoints_with_and_without_a_digest_load(tmp_path):
    state = checkpoint.load(_resaved(tmp_path) / "checkpoint.pt")
    assert state[checkpoint.DIGEST] == checkpoint.tensors_sha256(state)
    assert checkpoint.DIGEST not in checkpoint.load(FIXTURE / "checkpoint.pt")  # older: none, loads as before


# --- an export's model.json ----------------------------------------------------------------

def _norm_std(meta):
    meta["norm"]["std"] = [1e-4] * 3


def _no_files(meta):
    del meta["files"]


def _no_description(meta):
    del meta["description_sha256"]


def _config_changed(meta):
    meta["config"]["dense"] = meta["config"]["dense"] + 1


def _future(meta):
    meta["format_version"] = 99


EXPORTS = [  # (change made to model.json, what the one line says)
    (_norm_std, "differ from the description_sha256"),
    (_no_files, "damaged: format_version 2 records files and description_sha256, and this one lacks files"),
    (_no_description, "and this one lacks description_sha256"),
    (_config_changed, "differ from the description_sha256"),
    (_future, "format_version 99 is not one this cifarlab reads"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    assert cli.main(["export", str(FIXTURE), "--format", "safetensors", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("change,says", EXPORTS, ids=[c.__name__ for c, _ in EXPORTS])
def test_an_export_whose_description_changed_is_refused(exported, tmp_path, change, says):
    out = tmp_path / "model"
    shutil.copytree(exported, out)
    meta = json.loads((out / "model.json").read_text())
    assert meta["format_version"] == 2 and cifarlab.load(out).norm == meta["norm"]  # as exported: it loads
    change(meta)
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=re.escape(says)):
        cifarlab.load(out)


def test_an_export_older_than_its_digests_loads(exported, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(exported, out)
    meta = json.loads((out / "model.json").read_text())
    for k in ("files", "description_sha256", "format_version"):
        del meta[k]
    (out / "model.json").write_text(json.dumps(meta))
    assert cifarlab.load(out).norm == meta["norm"]


# --- a diverged run in a study -------------------------------------------------------------

@pytest.mark.slow
def test_a_study_marks_a_diverged_run_failed_with_the_reason(tmp_path, data_dir):
    """lr=100 with l2=10 (real data): the run's losses become non-finite in its first epoch; the study's job
    reports it failed, saying so, and no checkpoint of NaN weights is written."""
    from cifarlab.study.jobs import Job, run_job
    run = tmp_path / "run"
    job = Job("vgg1", 0, ("widths=[8]", "dense=16", "subset=600", "val_split=100", "epochs=2", "lr=100", "l2=10"),
              str(run), data_path=str(data_dir))
    out = run_job(job)
    assert out["status"] == "failed" and out["error"].startswith("Diverged: "), out
    assert "the training loss became non-finite at epoch 1, step " in out["error"], out["error"]
    assert not (run / "checkpoint.pt").exists() and not (run / "summary.json").exists()


# --- evaluate reads summary.json as the other verbs do -------------------------------------

SUMMARIES = [  # (summary.json written into the run folder, what the one line says)
    ('{"format_version": 99, "test_acc": 0.5}', "newer than this cifarlab reads"),
    ('{"format_version": "1", "test_acc": 0.5}', "format version"),
    ('{"test_acc": 0.5', "summary.json"),
    ('[1, 2]', "summary.json"),
]


@pytest.mark.parametrize("text,says", SUMMARIES, ids=["future", "malformed_version", "invalid_json", "a_list"])
def test_evaluate_refuses_a_summary_it_cannot_read(tmp_path, capsys, data_dir, text, says):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "summary.json").write_text(text)
    before = sorted(p.name for p in run.iterdir())
    assert cli.main(["evaluate", str(run), "--data", str(data_dir)]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and says in err and "summary.json" in err and out == "", (out, err)
    assert sorted(p.name for p in run.iterdir()) == before
