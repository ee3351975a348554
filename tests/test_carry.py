"""A long study moved between machines: `--stop-after` ends a study's share resumable, `cifarlab carry`
takes its records and unfinished runs out of the study folder and into a new one, and the run continues
there to exactly what an uninterrupted twin gives. Tiny real runs on a 1,000-image subset."""
import csv
import json
import subprocess
import sys

import pytest

from cifarlab import checkpoint

TINY = ["subset=1000", "val_split=100", "epochs=3", "widths=[8]", "dense=16", "eval_batch_size=500", "threads=1"]
TIMING = {"epoch_seconds", "images_per_second", "wall_seconds"}


def cifarlab(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "cifarlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def metrics_without_timing(run):
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def study_json(folder):
    return json.loads((folder / "study.json").read_text())


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A study stopped by --stop-after after its first epoch, carried out, carried into a new empty folder
    and continued there; beside it an uninterrupted twin. Returns the folders and each command's result."""
    root = tmp_path_factory.mktemp("moved")
    twin, first, records, second = (root / n for n in ("twin", "first", "records", "second"))
    common = ["--only", "vgg1", "--workers", "1", *TINY]
    out = {"twin_run": cifarlab("study", "--out", twin, *common),
           # the time is spent before the first epoch ends: the run stops at that epoch's end
           "stop": cifarlab("study", "--out", first, "--stop-after", "0.001s", *common)}
    out["carry_out"] = cifarlab("carry", "out", first, records)
    out["records_at_stop"] = sorted(p.name for p in (records / "runs" / "vgg1" / "seed0").iterdir())
    out["carry_in"] = cifarlab("carry", "in", records, second)
    out["resume"] = cifarlab("study", "--out", second, *common)
    out["carry_back"] = cifarlab("carry", "out", second, records)
    return {"twin": twin, "first": first, "records": records, "second": second, **out}


@pytest.mark.slow
def test_stop_after_stops_at_an_epochs_end_and_exits_0_saying_how_to_continue(moved):
    r = moved["stop"]
    assert r.returncode == 0, r.stderr
    assert "stopped after epoch 1, resumable" in r.stdout
    assert "Continue with: cifarlab study --out" in r.stdout
    run = moved["first"] / "runs" / "vgg1" / "seed0"
    assert not (run / "summary.json").exists()
    assert checkpoint.read(run / "checkpoint.pt")["epoch"] == 1
    assert len(metrics_without_timing(run)) == 1
    last = study_json(moved["first"])["invocations"][-1]
    assert last["stopped"] is True and not last.get("interrupted")
    assert last["counts"]["stopped"] == 1 and last["counts"]["failed"] == 0
    assert last["options"]["stop_after_seconds"] == pytest.approx(0.001)
    assert "stopped after epoch 1 of 3" in (run / "train.log").read_text()


@pytest.mark.slow
def test_carry_out_takes_the_unfinished_runs_checkpoint_and_names_it(moved):
    r = moved["carry_out"]
    assert r.returncode == 0, r.stderr
    assert "vgg1/seed0: unfinished, epoch 1 of 3" in r.stdout
    assert "git commit -m" in r.stdout and "vgg1/seed0 at epoch 1 of 3" in r.stdout
    assert moved["records_at_stop"] == ["checkpoint.pt", "config.yaml", "curves.png", "metrics.csv", "train.log"]


@pytest.mark.slow
def test_a_carried_run_continues_in_a_new_folder_to_exactly_the_uninterrupted_result(moved):
    assert moved["twin_run"].returncode == 0 and moved["carry_in"].returncode == 0
    assert "carried in" in moved["carry_in"].stdout
    r = moved["resume"]
    assert r.returncode == 0, r.stderr
    assert "vgg1/seed0: resumed" in r.stdout
    twin = moved["twin"] / "runs" / "vgg1" / "seed0"
    moved_run = moved["second"] / "runs" / "vgg1" / "seed0"
    assert len(metrics_without_timing(twin)) == 3
    assert metrics_without_timing(moved_run) == metrics_without_timing(twin)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (twin, moved_run))
    assert a["test_acc"] == b["test_acc"] and a["test_loss"] == b["test_loss"]
    # the summary names both legs, and its total counts both
    assert [g["from_epoch"] for g in b["segments"]] == [0, 1]
    assert all(g["seconds"] > 0 for g in b["segments"])
    assert b["total_seconds"] == pytest.approx(sum(g["seconds"] for g in b["segments"]))
    assert b["total_seconds"] > b["last_segment_seconds"]
    assert [g["from_epoch"] for g in a["segments"]] == [0] and a["total_seconds"] == pytest.approx(
        a["segments"][0]["seconds"])


@pytest.mark.slow
def test_carrying_a_finished_run_back_replaces_its_checkpoint_and_keeps_every_invocation(moved):
    r = moved["carry_back"]
    assert r.returncode == 0, r.stderr
    assert "vgg1/seed0: finished, records carried out" in r.stdout
    run = moved["records"] / "runs" / "vgg1" / "seed0"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "curves.png", "metrics.csv", "summary.json",
                                                      "train.log"]
    first, second = ([i["id"] for i in study_json(moved[k])["invocations"]] for k in ("first", "second"))
    assert len(first) == 1 and len(second) == 2 and second[0] == first[0]  # carried in, then the resume's
    assert [i["id"] for i in study_json(moved["records"])["invocations"]] == second


@pytest.mark.slow
def test_carry_never_replaces_a_finished_run_or_a_later_state(moved, tmp_path):
    import shutil
    stale = tmp_path / "stale"
    shutil.copytree(moved["first"], stale)  # the study folder as it was at the stop: epoch 1
    before = (moved["records"] / "runs" / "vgg1" / "seed0" / "summary.json").read_bytes()
    r = cifarlab("carry", "out", stale, moved["records"])
    assert r.returncode == 0, r.stderr
    assert "left as it is" in r.stdout and "has it finished" in r.stdout
    assert (moved["records"] / "runs" / "vgg1" / "seed0" / "summary.json").read_bytes() == before
    assert not (moved["records"] / "runs" / "vgg1" / "seed0" / "checkpoint.pt").exists()
    # an earlier state does not replace a later one: carry the stop's state into a copy one epoch further
    later = tmp_path / "later"
    shutil.copytree(moved["first"], later)
    r = cifarlab("carry", "in", stale, later)
    assert r.returncode == 0 and "at epoch 1 already" in r.stdout


@pytest.mark.slow
def test_bad_carries_are_one_line_and_write_nothing(moved, tmp_path):
    import shutil
    damaged = tmp_path / "damaged"
    shutil.copytree(moved["first"], damaged)
    state = damaged / "runs" / "vgg1" / "seed0" / "checkpoint.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    other = tmp_path / "other"
    cifarlab("study", "--out", other, "--only", "vgg1", "--stop-after", "0.001s", "--workers", "1", *TINY,
             "lr=0.02")
    cases = [
        (("out", tmp_path / "nope", tmp_path / "dest"), "no such folder"),
        (("out", moved["records"] / "runs", tmp_path / "dest"), "has no study.json"),
        (("out", damaged, tmp_path / "dest"), "truncated or damaged"),
        (("in", other, moved["records"]), "made with"),
        (("in", moved["records"], moved["records"]), "are one folder"),
    ]
    for args, words in cases:
        before = sorted(p.relative_to(moved["records"]) for p in moved["records"].rglob("*"))
        r = cifarlab("carry", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
        assert not (tmp_path / "dest").exists()
        assert sorted(p.relative_to(moved["records"]) for p in moved["records"].rglob("*")) == before


@pytest.mark.slow
@pytest.mark.parametrize("text", ["abc", "0s", "-5m", "2h2h", "30mm", ""])
def test_a_bad_stop_after_is_one_line_and_starts_nothing(tmp_path, text):
    r = cifarlab("study", "--out", tmp_path / "s", "--only", "vgg1", f"--stop-after={text}", *TINY, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--stop-after" in lines[0] and "2h30m" in lines[0]
    assert not (tmp_path / "s").exists()


def test_stop_after_reads_hours_minutes_and_seconds():
    from cifarlab.cli.study import parse_duration
    assert parse_duration("2h30m") == 9000 and parse_duration("45m") == 2700 and parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400 and parse_duration("1h2m3s") == 3723 and parse_duration("600") == 600


@pytest.mark.slow
def test_a_queued_run_does_not_begin_once_the_time_is_spent(tmp_path):
    out = tmp_path / "s"
    r = cifarlab("study", "--out", out, "--only", "vgg1", "--seeds", "2", "--workers", "1", "--order", "study",
                 "--stop-after", "0.001s", *TINY)
    assert r.returncode == 0, r.stderr
    assert "vgg1/seed0: stopped after epoch 1, resumable" in r.stdout
    assert "vgg1/seed1: stopped before it began" in r.stdout and "2 run(s) not finished" in r.stdout
    assert not (out / "runs" / "vgg1" / "seed1").exists()


@pytest.mark.slow
def test_a_run_begun_in_bf16_is_not_continued_in_fp32(tmp_path):
    """A run whose epochs so far computed in bf16 (a machine with native bf16 began it) is left as it is
    where its settings compute fp32: the study says so in one line and goes on; train --resume refuses."""
    out = tmp_path / "s"
    r = cifarlab("study", "--out", out, "--only", "vgg1", "--workers", "1", "--stop-after", "0.001s", *TINY,
                 "amp=off")
    assert r.returncode == 0, r.stderr
    run = out / "runs" / "vgg1" / "seed0"
    state = checkpoint.read(run / "checkpoint.pt")
    assert [g["arithmetic"] for g in state["segments"]] == ["fp32"]
    state["segments"][0]["arithmetic"] = "bf16"  # as a bf16 machine's segment reads
    checkpoint.save(run / "checkpoint.pt", state)
    before = (run / "checkpoint.pt").read_bytes(), (run / "metrics.csv").read_bytes()
    r = cifarlab("study", "--out", out, "--only", "vgg1", "--workers", "1", *TINY, "amp=off")
    assert r.returncode == 0, r.stderr
    assert "vgg1/seed0: deferred" in r.stdout
    assert "trained its 1 epochs so far in bf16; here it would continue in fp32" in r.stdout
    assert ((run / "checkpoint.pt").read_bytes(), (run / "metrics.csv").read_bytes()) == before
    assert not (run / "summary.json").exists()
    r = cifarlab("train", "--resume", run)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "in bf16" in r.stderr
    assert ((run / "checkpoint.pt").read_bytes(), (run / "metrics.csv").read_bytes()) == before
