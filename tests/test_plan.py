"""`cifarlab study --plan`: every run listed with its projected hours, nothing run or written."""
import json
import re
import subprocess
import sys

import pytest

from cifarlab.study.forecast import duration, forecast, makespan
from cifarlab.study.jobs import Job, epochs_done, images_per_epoch, job_config
from cifarlab.study.runner import plan
from conftest import STUDY_ARGS


def test_makespan_places_runs_in_order_on_free_workers():
    assert makespan([3, 1, 1, 1], 2) == 3  # 3 on one worker; 1, 1, 1 on the other
    assert makespan([1, 1, 3], 2) == 4  # the long run comes last and starts at 1
    assert makespan([2, 2, 2], 1) == 6
    assert makespan([], 2) == 0


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0, 59.6, 61, 3599, 3600, 11_100)] == ["0s", "1m 00s", "1m 01s", "59m 59s",
                                                                        "1h 00m", "3h 05m"]


def test_images_per_epoch_follow_the_loop():
    assert images_per_epoch(job_config(Job("vgg3", 0))) == (50_000, 10_000)  # last partial batch too
    assert images_per_epoch(job_config(Job("combined", 0))) == (781 * 64, 10_000)  # drop_last: 781 steps
    cfg = job_config(Job("vgg3", 0, ("subset=1000", "val_split=200")))
    assert images_per_epoch(cfg) == (800, 200)
    # a subset is an equal share of every class: the images of 1,009 asked for are 1,000 (real labels)
    from cifarlab.data import load_cifar10, subset_indices
    from conftest import data_path
    labels = load_cifar10(data_path()).y_train
    cfg = job_config(Job("vgg3", 0, ("subset=1009", "val_split=200")))
    assert images_per_epoch(cfg) == (len(subset_indices(labels, 1009, 0)) - 200, 200) == (800, 200)


@pytest.mark.slow
def test_plan_lists_every_run_and_writes_nothing(tmp_path):
    out = tmp_path / "st"
    cmd = [sys.executable, "-m", "cifarlab", "study", "--plan", "--plan-seconds", "0.4", "--out", str(out),
           "--only", "vgg1,vgg3,combined", "--seeds", "2", "--workers", "2", "subset=2000", "epochs=4", "device=cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not out.exists()  # no study.json, no run folder
    rows = {m[0]: m for m in re.findall(r"^(\w+/seed\d) †\s+(\d+)\s+([\d,]+) (\w+)\s+((?:\d+[hms] ?)+)$",
                                         r.stdout, re.M)}
    assert sorted(rows) == [f"{p}/seed{s}" for p in ("combined", "vgg1", "vgg3") for s in (0, 1)]
    assert {m[1] for m in rows.values()} == {"4"} and {m[3] for m in rows.values()} == {"new"}
    to_go = {k: m[4] for k, m in rows.items()}
    # one measurement per network: seeds of a preset get the same projection
    assert to_go["vgg1/seed0"] == to_go["vgg1/seed1"] and to_go["vgg3/seed0"] == to_go["vgg3/seed1"]
    assert "measuring vgg1's network" in r.stderr
    for name in ("vgg1", "vgg3", "combined"):
        assert re.search(rf"^{name}\s+[\d,]+\s+[\d,]+\s+fp32$", r.stdout, re.M), r.stdout  # amp auto: fp32 on a CPU
    assert "finished already: 0 of 6" in r.stdout and "not comparable" in r.stdout


@pytest.mark.slow
def test_plan_of_a_study_in_progress_counts_what_is_done(small_study):
    """The shared small study (all runs finished) and one more seed: only the new runs cost anything."""
    overrides = [a for a in STUDY_ARGS if "=" in a]
    jobs = plan(["vgg3", "dropout", "bn_only"], 3, overrides, small_study["dir"], workers=2)
    fc = forecast(jobs, workers=2, seconds=0.3)
    by = {r.label: r for r in fc.runs}
    assert {k for k, r in by.items() if r.status == "finished"} == {
        f"{p}/seed{s}" for p in ("vgg3", "dropout", "bn_only") for s in (0, 1)}
    for k, r in by.items():
        if r.status == "finished":
            assert r.seconds == 0 and r.done == r.epochs == 3
            assert epochs_done(r.run_dir) == 3
        else:
            assert k.endswith("seed2") and r.status == "new" and r.seconds > 0
    assert fc.seconds == pytest.approx(makespan([by[f"{p}/seed2"].seconds for p in ("vgg3", "dropout", "bn_only")], 2))
    for k in ("vgg3/seed2", "bn_only/seed2"):  # remaining epochs x (train + validation) + the final test
        r, sp = by[k], fc.speeds[by[k].network]
        assert r.seconds == pytest.approx(3 * (r.train_images / sp.train_ips + r.val_images / sp.eval_ips)
                                          + r.test_views / sp.eval_ips)
    assert by["vgg3/seed2"].train_images == 800 and by["vgg3/seed2"].val_images == 200
    assert len(fc.speeds) == 3  # vgg3, dropout and bn_only are three networks
    json.dumps(fc.to_dict())  # serialisable


def test_plan_places_the_longest_runs_first_as_the_study_will(tmp_path):
    """combined (400 epochs at the preset) after two vgg3 seeds (100) would run alone at the end;
    handed out first, it runs beside them."""
    jobs = plan(["vgg3", "combined"], 2, ["subset=1000", "val_split=200"], tmp_path / "s", epochs_scale=0.01,
                workers=2, seeds_for={"combined": 1})
    assert [j.label for j in jobs] == ["vgg3/seed0", "vgg3/seed1", "combined/seed0"]
    fc = forecast(jobs, workers=2, seconds=0.3)
    assert [r.label for r in fc.runs] == ["combined/seed0", "vgg3/seed0", "vgg3/seed1"]
    sec = {r.label: r.seconds for r in fc.runs}
    assert fc.seconds == pytest.approx(makespan([sec["combined/seed0"], sec["vgg3/seed0"], sec["vgg3/seed1"]], 2))
    assert fc.seconds_in_study_order == pytest.approx(
        makespan([sec["vgg3/seed0"], sec["vgg3/seed1"], sec["combined/seed0"]], 2))
    assert fc.seconds < fc.seconds_in_study_order
    text = fc.table()
    assert "run (longest first)" in text and "in the study's order (--order study)" in text
    same = forecast(jobs, workers=2, seconds=0.3, order="study")
    assert [r.label for r in same.runs] == [j.label for j in jobs] and same.seconds_in_study_order is None
    assert "run (in study order)" in same.table()


def test_plan_says_what_each_network_computes_in_here(tmp_path):
    """amp=native resolves on the device: the plan's table says what it became, as the runs will."""
    from cifarlab.engine import native_bf16, pick_device
    native = "bf16" if native_bf16(pick_device("auto")) else "fp32"  # on the device the plan's runs take
    for amp, expect in (("native", native), ("bf16", "bf16"), ("off", "fp32")):
        jobs = plan(["vgg1"], 1, ["subset=1000", "widths=[8]", f"amp={amp}"], tmp_path / amp, workers=1)
        fc = forecast(jobs, workers=1, seconds=0.2)
        assert fc.speeds["vgg1"].arithmetic == expect
        assert re.search(rf"^vgg1\s+[\d,]+\s+[\d,]+\s+{expect}$", fc.table(), re.M), fc.table()


@pytest.mark.slow
def test_protocol_script_plans_the_machines_share_of_the_study(tmp_path):
    """scripts/protocol_study.sh passes --plan (and a --stop-after budget) through to each of its study calls;
    where bf16 is native, combined and centered train side by side in the bf16 folder, with bn_only's three
    seeds and then the rest of the combined family; elsewhere bn_only and the regularisers' seeds in fp32."""
    import os
    from pathlib import Path

    from conftest import data_path
    from cifarlab.engine import native_bf16, pick_device
    script = Path(__file__).resolve().parents[1] / "scripts" / "protocol_study.sh"
    out = tmp_path / "protocol"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run(["bash", str(script), str(out), "--plan", "--plan-seconds", "0.05", "--stop-after", "2h",
                        "--data", str(data_path())], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert not out.exists() and not Path(f"{out}-bf16").exists()  # plans write nothing
    plans = r.stdout.split("\nstudy ")

    def runs(text):
        return re.findall(r"^(\w+/seed\d)\s+\d+\s+[\d,]+ new", text, re.M)

    six = ["vgg1", "vgg2", "vgg3", "dropout", "weight_decay", "augmentation"]
    assert sorted(runs(plans[0])) == sorted([f"{p}/seed0" for p in six] + ["vgg3/seed1", "vgg3/seed2"])
    if native_bf16(pick_device("auto")):
        assert len(plans) == 3, r.stdout
        assert plans[1].startswith(f"{out}-bf16\n") and plans[2].startswith(f"{out}-bf16\n")
        assert re.search(r"^combined\s+[\d,]+\s+[\d,]+\s+bf16$", plans[1], re.M)
        queue = runs(plans[1])
        assert sorted(queue) == sorted(["combined/seed0", "centered/seed0", "dropout_only/seed0"]
                                       + [f"{p}/seed{k}" for p in ("vgg3", "bn_only") for k in range(3)])
        assert sorted(queue[:2]) == ["centered/seed0", "combined/seed0"]  # the 400-epoch pair side by side
        rest = ["adam", "cosine", "bn_dropout_swapped", "step_decay", "adamw", "cosine_restarts",
                "increasing_dropout", "dropout_augmentation", "warmup_cosine"]
        assert sorted(runs(plans[2])) == sorted(f"{p}/seed0" for p in rest)
    else:
        assert len(plans) == 2, r.stdout
        assert plans[1].startswith(f"{out}\n")
        assert sorted(runs(plans[1])) == sorted([f"bn_only/seed{k}" for k in range(3)] + [
            f"{p}/seed{k}" for p in ("weight_decay", "dropout", "augmentation") for k in range(3)])


@pytest.mark.slow
def test_protocol_script_refuses_a_bad_budget_before_any_study(tmp_path):
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "scripts" / "protocol_study.sh"
    r = subprocess.run(["bash", str(script), str(tmp_path / "p"), "--stop-after", "soon"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "--stop-after 'soon'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
