"""Run folders carry their format: those written before it was recorded still resume, evaluate
and export; a file of a newer format is refused in one line that names it and its version.

tests/fixtures/run_v0_interrupted is a real run folder written by cifarlab before checkpoints
and summaries recorded a format version: preset vgg1 at widths=[4] dense=8 on a 600-image
subset (100 held out), seed 5, stopped after epoch 1 of 2 (its checkpoint, metrics.csv,
curves.png and config.yaml as that code wrote them).
"""
import json
import shutil
from pathlib import Path

import pytest
import torch

from cifarlab import checkpoint
from cifarlab.config import from_dict
from cifarlab.runfolder import FORMAT_VERSION, RunFolderError
from cifarlab.runfolder import read_metrics
from cifarlab.train import train

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0_interrupted"
VALUES = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]
quiet = dict(progress=False, log=lambda *a: None)


@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_fixture_is_an_interrupted_run_without_a_format_version():
    state = checkpoint.load(FIXTURE / "checkpoint.pt")
    assert "format_version" not in state
    assert state["epoch"] == 1 and state["config"]["epochs"] == 2
    assert not (FIXTURE / "summary.json").exists()
    assert sum(f.stat().st_size for f in FIXTURE.iterdir()) < 300_000


def test_an_old_run_folder_resumes_as_if_never_stopped(old_run, tmp_path):
    cfg = from_dict(checkpoint.load(old_run / "checkpoint.pt")["config"])
    s = train(None, old_run, resume=True, **quiet)
    rows = read_metrics(old_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert s["format_version"] == FORMAT_VERSION
    assert checkpoint.load(old_run / "checkpoint.pt")["format_version"] == FORMAT_VERSION
    assert len(s["segments"]) == 2 and s["segments"][1]["from_epoch"] == 1
    # the run trained whole by this code ends where the resumed one does (the fixture's first
    # epoch was computed on the machine that wrote it: equal up to float rounding elsewhere)
    whole = train(cfg, tmp_path / "whole", **quiet)
    for a, b in zip(read_metrics(tmp_path / "whole"), rows):
        assert [a[k] for k in VALUES] == pytest.approx([b[k] for k in VALUES], rel=1e-3)
    assert whole["test_acc"] == pytest.approx(s["test_acc"], abs=2e-3)
    # and a finished run of this format resumes to nothing
    assert train(None, old_run, resume=True, **quiet) == s


def test_an_old_run_folder_evaluates_and_exports(old_run, tmp_path, data_dir):
    from cifarlab.inference.evaluate import evaluate_model, write_evaluation
    from cifarlab.inference.export import export_run
    from cifarlab.inference.predict import load, load_checkpoint
    model = load_checkpoint(old_run / "checkpoint.pt", "cpu")
    result = evaluate_model(model, data=data_dir)
    files = write_evaluation(old_run, result, model.config.get("name"))
    assert result["epoch"] == 1 and 0 <= result["test_acc"] <= 1 and all(f.is_file() for f in files)
    out = export_run(old_run, "safetensors", out=tmp_path / "export", data=data_dir)
    assert out["check"]["within_tolerance"]
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    assert torch.allclose(load(tmp_path / "export", "cpu").logits(x), load(old_run, "cpu").logits(x), atol=1e-5)


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line(old_run):
    state = checkpoint.load(old_run / "checkpoint.pt")
    checkpoint.save(old_run / "checkpoint.pt", {**state, "format_version": FORMAT_VERSION + 1})
    for read in (checkpoint.load, checkpoint.read):
        with pytest.raises(checkpoint.CheckpointError) as e:
            read(old_run / "checkpoint.pt")
        msg = str(e.value)
        assert "\n" not in msg and str(old_run / "checkpoint.pt") in msg and f"version {FORMAT_VERSION + 1}" in msg
    with pytest.raises(checkpoint.CheckpointError, match="newer than this cifarlab reads"):
        train(None, old_run, resume=True, **quiet)
    assert read_metrics(old_run)[-1]["epoch"] == 1  # nothing trained over it


def test_a_summary_of_a_newer_format_is_refused_in_one_line(old_run):
    from cifarlab.runfolder import read_summary
    (old_run / "summary.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "test_acc": 0.5}))
    with pytest.raises(RunFolderError) as e:
        train(None, old_run, resume=True, **quiet)
    msg = str(e.value)
    assert "\n" not in msg and str(old_run / "summary.json") in msg and f"version {FORMAT_VERSION + 1}" in msg
    (old_run / "summary.json").write_text(json.dumps({"test_acc": 0.5}))  # no version: the old format
    assert read_summary(old_run)["test_acc"] == 0.5
