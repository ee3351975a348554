"""The study runner on real data: folder layout, kill-and-rerun, settings checks, scaling."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cifarlab.config import load_preset
from cifarlab.config import STUDY_ORDER
from cifarlab.study.jobs import Job, job_config, ordered_presets, run_status, scale_overrides


def test_every_study_row_is_a_preset_with_its_references():
    assert ordered_presets()[:len(STUDY_ORDER)] == STUDY_ORDER
    refs = {"vgg3": (73.81, 73.50), "combined": (87.82, 88.62), "adamw": (41.3, None),
            "vgg1": (None, 67.07), "warmup_cosine": (None, None)}
    for name, (seed, article) in refs.items():
        r = load_preset(name).reference
        assert (r.get("seed_report"), r.get("article")) == (seed, article), name
    c = load_preset("combined")
    assert (c.batchnorm, c.dropout, c.augment, c.drop_last, c.epochs) == (
        True, [0.2, 0.3, 0.4, 0.5], "shift_flip", True, 400)
    s = load_preset("step_decay")
    assert (s.boundaries, s.values, s.batchnorm) == ([1400, 2800, 10000], [0.1, 0.01, 0.001, 0.0001], True)
    a = load_preset("adamw")
    assert (a.optimizer, a.weight_decay, a.eps, a.decay_on) == ("adamw", 0.004, 1e-7, "all")
    for name in ("adam", "adamw", "cosine", "cosine_restarts", "step_decay", "warmup_cosine"):
        assert "chosen" in load_preset(name).description, name  # open parameters are declared


@pytest.mark.slow
def test_presets_command_lists_every_preset():
    out = subprocess.run([sys.executable, "-m", "cifarlab", "presets"], capture_output=True, text=True).stdout
    for name in STUDY_ORDER:
        assert f"\n{name} " in out


def test_epoch_scale_keeps_schedule_shape_and_marks_not_comparable():
    cfg = job_config(Job("cosine_restarts", 3, ("subset=5000",), "x", 0.02))
    assert (cfg.epochs, cfg.seed, cfg.comparable) == (8, 3, False)
    assert cfg.decay_epochs == pytest.approx(400 / 15 * 0.02)  # four periods still end at the last epoch
    assert scale_overrides(load_preset("warmup_cosine"), 0.5) == ["epochs=200", "warmup_epochs=10.0"]
    assert job_config(Job("vgg3", 0, (), "x")).comparable is True
    assert job_config(Job("vgg3", 0, ("lr=0.01",), "x")).comparable is True


def test_bad_study_commands_fail_clearly(tmp_path, capsys):
    from cifarlab.cli import main

    def study(*a):
        rc = main(["study", "--out", str(tmp_path / "s"), *a])
        return rc, capsys.readouterr().err
    rc, err = study("--only", "vgg3,nope")
    assert rc == 2 and "unknown preset nope" in err
    rc, err = study("--only", "vgg3", "seed=3")
    assert rc == 2 and "--seeds" in err
    rc, err = study("--only", "vgg3", "bogus=1")
    assert rc == 2 and "unknown config key: bogus" in err
    rc, err = study("--only", "vgg3", "--backend", "cluster")
    assert rc == 2 and "unknown backend 'cluster'" in err
    assert not (tmp_path / "s").exists()  # nothing written for a refused command


@pytest.mark.slow
def test_study_folder_layout(small_study):
    study = small_study["dir"]
    runs = sorted(f"{d.parent.name}/{d.name}" for d in study.glob("runs/*/seed*"))
    assert runs == [f"{p}/seed{s}" for p in ("bn_only", "dropout", "vgg3") for s in (0, 1)]
    for p in ("vgg3", "dropout", "bn_only"):
        for s in (0, 1):
            d = study / "runs" / p / f"seed{s}"
            assert run_status(d) == "finished"
            summary = json.loads((d / "summary.json").read_text())
            assert (summary["name"], summary["seed"], summary["epochs"]) == (p, s, 3)
            assert summary["train_images"] == 800 and summary["comparable"] is False
            assert 0.1 < summary["test_acc"] < 1  # above chance after 3 epochs of 800 images
    meta = small_study["meta"]
    assert meta["settings"]["overrides"] == ["subset=1000", "val_split=200", "epochs=3", "eval_batch_size=500"]
    assert len(meta["invocations"]) == 2 and meta["invocations"][0]["finished"] is None  # the killed one
    assert meta["invocations"][1]["options"]["workers"] == 2
    # seeds differ: the two seeds of a preset are different runs
    a, b = (json.loads((study / "runs/vgg3" / s / "summary.json").read_text())["test_loss"] for s in ("seed0", "seed1"))
    assert a != b


@pytest.mark.slow
def test_rerun_after_kill_skips_finished_and_resumes_partial(small_study):
    at_kill = small_study["at_kill"]
    finished = {k for k, (state, _) in at_kill.items() if state == "finished"}
    partial = {k for k, (state, _) in at_kill.items() if state == "partial"}
    assert finished and partial
    counts = small_study["meta"]["invocations"][1]["counts"]
    assert counts["skipped"] == len(finished)
    assert counts["resumed"] == len(partial)
    assert counts["trained"] == 6 - len(finished) - len(partial)
    assert counts["failed"] == counts["busy"] == 0
    study = small_study["dir"]
    for k in finished:  # nothing finished is recomputed or rewritten
        assert (study / "runs" / k / "summary.json").read_bytes() == at_kill[k][1]
    for k in partial:
        assert "resuming" in (study / "runs" / k / "train.log").read_text()
    # and a third invocation has nothing left to do
    p = subprocess.run([sys.executable, "-m", "cifarlab", "study", "--out", str(study),
                        "--only", "vgg3,dropout,bn_only", "--seeds", "2", "subset=1000", "val_split=200",
                        "epochs=3", "eval_batch_size=500"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "6 finished, 0 to run" in p.stdout


@pytest.mark.slow
def test_other_settings_on_the_same_folder_are_refused(small_study):
    p = subprocess.run([sys.executable, "-m", "cifarlab", "study", "--out", str(small_study["dir"]),
                        "--only", "vgg3", "subset=2000"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "was made with" in p.stderr


def test_a_failing_run_is_reported_and_logged(tmp_path, capsys):
    from cifarlab.cli import main
    out = tmp_path / "s"
    # a checkpoint cut to nothing: the run cannot resume, train() refuses, the study goes on
    run = out / "runs" / "vgg3" / "seed0"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    rc = main(["study", "--out", str(out), "--only", "vgg3", "--backend", "inline", "subset=20"])
    log = capsys.readouterr().out
    assert rc == 1 and "vgg3/seed0: failed" in log and "cannot load the checkpoint" in log
    assert "Traceback" in (out / "runs/vgg3/seed0/train.log").read_text()
    meta = json.loads((out / "study.json").read_text())
    assert meta["invocations"][0]["counts"]["failed"] == 1


def test_jobs_and_the_job_function_travel_to_other_processes():
    import pickle
    from cifarlab.study.jobs import run_job
    from cifarlab.study.runner import BACKENDS, plan
    jobs = plan(["vgg3", "dropout"], 2, ["epochs=1"], "studies/x", workers=2)
    assert [j.label for j in jobs] == ["vgg3/seed0", "vgg3/seed1", "dropout/seed0", "dropout/seed1"]
    assert jobs[0].run_dir.endswith("runs/vgg3/seed0") and jobs[0].threads >= 1
    assert pickle.loads(pickle.dumps(jobs)) == jobs
    assert pickle.loads(pickle.dumps(run_job)) is run_job  # importable by name, as a Ray task needs
    assert {"local", "inline"} <= set(BACKENDS)


def test_a_jobs_thread_share_is_handed_to_train_not_left_in_the_environment(tmp_path):
    import dataclasses
    import os

    import torch

    from cifarlab.study.jobs import run_job
    from cifarlab.study.runner import plan
    job = plan(["vgg1"], 1, ["subset=300", "val_split=100", "epochs=1", "widths=[4]", "dense=8", "test=false",
                             "device=cpu"], tmp_path / "s")[0]  # CPU threads, on a machine with a GPU too
    before = torch.get_num_threads()
    try:
        for share in (1, 2):
            r = run_job(dataclasses.replace(job, threads=share, run_dir=str(tmp_path / f"t{share}")))
            assert r["status"] == "trained", r
            summary = json.loads((tmp_path / f"t{share}" / "summary.json").read_text())
            assert summary["device"].endswith(f", {share} threads)")
            assert summary["command"] is None  # planned without one: none recorded, not this process's argv
    finally:
        torch.set_num_threads(before)
    assert not any(k.startswith("CIFARLAB_THREADS") for k in os.environ)


def test_the_command_is_given_not_read_from_argv(tmp_path):
    from cifarlab.study.runner import open_study, plan
    line = "cifarlab study --only vgg3 --out 'my studies/x' epochs=1"
    jobs = plan(["vgg3"], 1, ["epochs=1"], tmp_path / "s", command=line)
    assert jobs[0].command == ("cifarlab", "study", "--only", "vgg3", "--out", "my studies/x", "epochs=1")
    assert plan(["vgg3"], 1, ["epochs=1"], tmp_path / "s")[0].command == ()
    settings = {"overrides": [], "epochs_scale": 1.0, "quick": False}
    assert open_study(tmp_path / "s", settings, {}, line)["invocations"][-1]["command"][-1] == "epochs=1"
    assert open_study(tmp_path / "s", settings, {})["invocations"][-1]["command"] is None


def test_only_gives_a_preset_its_own_number_of_seeds(tmp_path, capsys):
    from cifarlab.cli import main
    from cifarlab.study.jobs import StudyError, parse_only
    from cifarlab.reporting.report import parse_expect, planned
    from cifarlab.study.runner import plan
    assert parse_only("vgg1, vgg3:3,combined") == (["vgg1", "vgg3", "combined"], {"vgg3": 3})
    assert parse_only(None) == (None, {}) and parse_only(" , ") == (None, {})
    names, counts = parse_only("vgg1,vgg3:3")
    jobs = plan(names, 1, [], tmp_path / "s", seeds_for=counts)
    assert [j.label for j in jobs] == ["vgg1/seed0", "vgg3/seed0", "vgg3/seed1", "vgg3/seed2"]
    assert [j.label for j in plan(names, 2, [], tmp_path / "s", seeds_for=counts)][:2] == ["vgg1/seed0", "vgg1/seed1"]
    for bad in ("vgg3:0", "vgg3:x", ":3", "vgg3:"):
        with pytest.raises(StudyError, match="PRESET:SEEDS"):
            parse_only(bad)
    assert parse_expect("vgg3:3,combined") == {"vgg3": 3, "combined": 1}  # the report reads the same syntax
    # the report expects what the invocations planned, each preset's own count included
    rep = {"meta": {"invocations": [{"options": {"presets": ["vgg1", "vgg3"], "seeds": 1, "seeds_for": {"vgg3": 3}}}]},
           "rows": []}
    assert planned(rep) == {"vgg1": [0], "vgg3": [0, 1, 2]}
    rc = main(["study", "--out", str(tmp_path / "s"), "--only", "vgg3:x"])
    assert rc == 2 and "--only 'vgg3:x'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_several_workers_take_the_longest_runs_first(tmp_path):
    from cifarlab.study.jobs import longest_first, remaining_images
    from cifarlab.study.runner import execution_order, plan
    jobs = plan(["vgg1", "vgg3", "combined"], 1, [], tmp_path / "s")
    assert remaining_images(jobs[2]) == 400 * 781 * 64 and remaining_images(jobs[0]) == 100 * 50_000
    assert [j.preset for j in execution_order(jobs, "auto", 2)] == ["combined", "vgg1", "vgg3"]  # ties keep order
    assert execution_order(jobs, "auto", 1) == jobs  # one worker: the study's order, baselines first
    assert execution_order(jobs, "study", 2) == jobs and execution_order(jobs, "longest", 1) == longest_first(jobs)
    with pytest.raises(ValueError, match="unknown order 'fast'"):
        execution_order(jobs, "fast", 2)
    # what is left counts, not the preset's length: combined at epoch 350 of 400 has 50 to go
    run = Path(jobs[2].run_dir)
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,val_acc\n" + "".join(f"{e},0.5\n" for e in range(1, 351)))
    (run / "checkpoint.pt").write_bytes(b"x")
    assert [j.preset for j in execution_order(jobs, "auto", 2)] == ["vgg1", "vgg3", "combined"]
    (run / "summary.json").write_text("{}")
    assert remaining_images(jobs[2]) == 0


def test_a_study_hands_out_the_longest_run_first_and_records_the_counts(tmp_path, capsys):
    """A real (tiny) study: combined has four times vgg3's epochs, so on two workers it starts first."""
    from cifarlab.cli import main
    out = tmp_path / "s"
    args = ["study", "--out", str(out), "--only", "vgg3,combined:2", "--workers", "2", "--backend", "inline",
            "--epochs-scale", "0.005", "subset=300", "val_split=100", "widths=[4,4,4]", "dense=8", "test=false"]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "3 runs (2 presets x 1 seeds; combined 2)" in log and "longest runs first" in log
    done = re.findall(r"\] (\w+/seed\d): trained", log)
    assert done == ["combined/seed0", "combined/seed1", "vgg3/seed0"], log
    assert [len(open(out / f"runs/{r}/metrics.csv").readlines()) - 1 for r in done] == [2, 2, 1]
    options = json.loads((out / "study.json").read_text())["invocations"][0]["options"]
    assert options["seeds"] == 1 and options["seeds_for"] == {"combined": 2}
    assert main([*args[:3], "--order", "study", *args[3:]]) == 0  # all finished: nothing to order
    assert "0 to run" in capsys.readouterr().out
