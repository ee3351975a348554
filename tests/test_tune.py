"""`cifarlab tune`: search-space parsing, and a tiny real sweep on a private Ray instance."""
import csv
import json
import math
import subprocess
import sys

import pytest
import yaml

from cifarlab.cli.tune import tune_config
from cifarlab.config import ConfigError, load_file, train_images
from cifarlab.errors import UsageError
from cifarlab.study.tune import EpochReports, parse_param
from netns import loopback_only, require_loopback_namespace


def test_param_specs_are_parsed_and_checked():
    assert parse_param("lr=loguniform(1e-4, 1e-1)") == ("lr", "loguniform", [1e-4, 0.1])
    assert parse_param("values=choice([0.1,0.01],[0.03,0.003])") == ("values", "choice",
                                                                      [[0.1, 0.01], [0.03, 0.003]])
    assert parse_param("batch_size=grid(32,64)") == ("batch_size", "grid", [32, 64])
    for spec, words in [("lr=loguniform(0,1)", "positive low end"), ("lr=uniform(1,0.5)", "below high"),
                        ("lr=gauss(0,1)", "unknown space"), ("lrate=uniform(0,1)", "unknown config key"),
                        ("epochs=randint(1,5)", "set by the search itself"), ("lr=0.1", "KEY=SPACE"),
                        ("batch_size=choice(32,'big')", "expected int"), ("lr=uniform(0)", "two numbers")]:
        with pytest.raises(ConfigError, match=words):
            parse_param(spec)


@pytest.mark.slow
def test_without_ray_the_error_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from cifarlab.cli import main; "
            "sys.exit(main(['tune', 'vgg3', '--param', 'lr=uniform(0.001,0.01)', '--out', sys.argv[1]]))")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert "cifarlab[ray]" in p.stderr and "Traceback" not in p.stderr


# Each case is main() in one process where `import ray` fails: a command refused before Ray starts
# ends with its own error; one that reaches Ray ends with the error that says to install it.
CHECKS = {
    "grace 0": (["--grace-period", "0"], "--grace-period 0: must be a whole number of epochs from 1 to the trials' 4"),
    "grace -1": (["--grace-period", "-1"], "--grace-period -1: must be a whole number"),
    "grace beyond": (["--grace-period", "5"], "--grace-period 5: must be a whole number of epochs from 1 to the "
                                              "trials' 4 epochs"),
    "reduction 1": (["--reduction-factor", "1"], "--reduction-factor 1.0: must be a finite number above 1"),
    "reduction 0.5": (["--reduction-factor", "0.5"], "--reduction-factor 0.5: must be a finite number above 1"),
    "reduction nan": (["--reduction-factor", "nan"], "--reduction-factor nan: must be a finite number above 1"),
    "reduction inf": (["--reduction-factor", "inf"], "--reduction-factor inf: must be a finite number above 1"),
    "grace at epochs": (["--grace-period", "4", "--reduction-factor", "3"], "cifarlab[ray]"),
    "test=false": (["test=false"], "cifarlab[ray]"),  # the default val_split applies before the check
    "val_split=0": (["test=false", "--val-split", "0"], "val_split must be above 0"),
    "cpus per trial 0": (["--cpus-per-trial", "0"], "--cpus-per-trial 0: must be a number above 0"),
    "cpus per trial nan": (["--cpus-per-trial", "nan"], "--cpus-per-trial nan: must be a number above 0"),
    "cpus per trial beyond": (["--cpus", "2", "--cpus-per-trial", "3"],
                              "--cpus-per-trial 3: more than the 2 CPUs --cpus gives the local Ray instance, "
                              "so no trial could start"),
    "cpus 0": (["--cpus", "0"], "--cpus 0: must be 1 or more"),
    "gpus per trial -1": (["--gpus-per-trial", "-1"], "--gpus-per-trial -1: must be 0 or more"),
    "gpus per trial beyond": (["--gpus-per-trial", "99"], "--gpus-per-trial 99: more than the"),
    "cluster's own": (["--address", "127.0.0.1:1", "--cpus-per-trial", "999"], "cifarlab[ray]"),
}


@pytest.mark.slow
def test_tune_options_are_checked_before_ray_starts(tmp_path):
    code = ("import json, sys; sys.modules['ray'] = None\n"
            "from cifarlab.cli import main\n"
            "out = {}\n"
            "for name, extra in json.loads(sys.argv[1]).items():\n"
            "    opts = [a for a in extra if '=' not in a]; fixed = [a for a in extra if '=' in a]\n"
            "    rc = main(['tune', 'vgg3', *fixed, '--param', 'lr=uniform(0.001,0.01)', '--epochs', '4',\n"
            "               '--subset', '100', '--out', sys.argv[2] + '/' + str(len(out)), *opts])\n"
            "    out[name] = rc\n"
            "    print('@@', name, file=sys.stderr, flush=True)\n"
            "print(json.dumps(out))\n")
    p = subprocess.run([sys.executable, "-c", code, json.dumps({k: v[0] for k, v in CHECKS.items()}),
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    codes = json.loads(p.stdout.strip().splitlines()[-1])
    # stderr: each case's lines, then its "@@ name" marker
    errors, lines = {}, []
    for line in p.stderr.splitlines():
        if line.startswith("@@ "):
            errors[line[3:]], lines = lines, []
        else:
            lines.append(line)
    for name, (_, words) in CHECKS.items():
        assert codes[name] == 2, (name, errors[name])
        err = [x for x in errors[name] if x.startswith("cifarlab tune: error: ")]
        assert len(err) == 1 and words in err[0], (name, errors[name])
    assert not any(tmp_path.iterdir())  # nothing written by any of them


def test_tune_holds_out_a_tenth_before_the_config_is_checked(tmp_path):
    cfg = tune_config("vgg3", ["test=false"], subset=100)
    assert (cfg.test, cfg.subset, cfg.val_split, cfg.comparable) == (False, 100, 10, False)
    assert tune_config("vgg3", ["test=false"]).val_split == 5000
    assert tune_config("vgg3", ["test=false", "val_split=200"], subset=1000).val_split == 200
    assert tune_config("fast94", [], val_split=500).val_split == 500
    (tmp_path / "t.yaml").write_text("base: vgg3\ntest: false\nsubset: 2000\n")  # a file that says test=false
    assert tune_config(str(tmp_path / "t.yaml"), []).val_split == 200
    with pytest.raises(UsageError, match="held-out training images; val_split must be above 0"):
        tune_config("vgg3", ["val_split=0"])
    with pytest.raises(ConfigError, match="subset=-10"):  # the default does not hide a bad setting
        tune_config("vgg3", ["test=false"], subset=-10)
    # the trials train on what was held out of a class-balanced subset
    assert train_images(tune_config("vgg3", ["test=false"], subset=1000)) == 900


@pytest.mark.slow
def test_tiny_sweep_writes_table_and_best_preset(tmp_path):
    pytest.importorskip("ray", reason="the `ray` extra is not installed (scripts/install.sh test installs it)")
    require_loopback_namespace()
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "cifarlab", "tune", "vgg3", "eval_batch_size=500",
           "--param", "lr=loguniform(1e-3,1e-1)", "--param", "momentum=choice(0.0,0.9)",
           "--param", "widths=choice([16,32,64],[32,64,128])",  # list values: passed to Tune as text
           "--samples", "3", "--epochs", "2", "--subset", "600", "--baseline", "--cpus", "2",
           "--out", str(out)]
    p = subprocess.run(loopback_only(cmd), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(out / "tune.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    accs = [float(r["val_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)  # best first
    assert any(float(r["lr"]) == 0.001 and float(r["momentum"]) == 0.9 and yaml.safe_load(r["widths"]) == [32, 64, 128]
               for r in rows)  # --baseline: vgg3's own values
    for r in rows:
        assert 1e-3 <= float(r["lr"]) <= 0.1 and r["status"] in ("finished", "stopped early")
        assert yaml.safe_load(r["widths"]) in ([16, 32, 64], [32, 64, 128])
        assert load_file(f"{r['run']}/config.yaml").widths == yaml.safe_load(r["widths"])
        with open(f"{r['run']}/metrics.csv") as f:
            assert len(list(csv.DictReader(f))) == int(r["epochs"]) >= 1
        if r["status"] == "finished":
            assert 0 <= float(r["test_acc"]) <= 1
        else:
            assert math.isnan(float(r["test_acc"]))
    # held-out validation: a tenth of the subset, never the test set
    cfg = load_file(f"{rows[0]['run']}/config.yaml")
    assert (cfg.subset, cfg.val_split) == (600, 60)
    # trial checkpoints kept by Tune
    assert list((out / "trials").glob("*/checkpoint_*/checkpoint.pt"))
    # the best trial as a preset file that `cifarlab train --config` reads
    assert "\nbase: vgg3\n" in (out / "best.yaml").read_text()
    best = load_file(out / "best.yaml")
    assert best.lr == pytest.approx(float(rows[0]["lr"]), rel=1e-6)
    assert best.momentum == float(rows[0]["momentum"]) and best.blocks == 3 and best.eval_batch_size == 500
    assert best.widths == yaml.safe_load(rows[0]["widths"])
    assert best.epochs == 100  # the search's budget is not carried into the preset
    assert "val_acc" in p.stdout and "best config" in p.stdout


def test_a_trial_trained_without_the_test_set_reports_its_last_epoch(tmp_path):
    # the trial's reporting as Tune sees it, on a real run of test=false: every epoch, the last one too
    from cifarlab.runfolder import read_metrics
    from cifarlab.train import train
    cfg = tune_config("vgg3", ["test=false", "eval_batch_size=500"], epochs=3, subset=200)
    run = tmp_path / "run"
    sent = []
    reports = EpochReports(cfg.epochs, lambda metrics, ckpt: sent.append((metrics, ckpt)))
    summary = train(cfg, run, progress=False, log=lambda *a: None, on_epoch=reports.on_epoch)
    reports.finish(summary, run)
    assert summary["test_acc"] is None
    assert [m["epoch"] for m, _ in sent] == [1, 2, 3]
    assert all(ckpt == run / "checkpoint.pt" for _, ckpt in sent)
    assert "test_acc" not in sent[-1][0] and sent[-1][0]["val_acc"] == pytest.approx(read_metrics(run)[-1]["val_acc"])
    # Tune restarting the finished trial: train() returns at once, the last epoch is read from the run folder
    again = []
    reports = EpochReports(cfg.epochs, lambda metrics, ckpt: again.append(metrics))
    reports.finish(train(None, run, resume=True, log=lambda *a: None, on_epoch=reports.on_epoch), run)
    assert len(again) == 1 and again[0] == pytest.approx(sent[-1][0], rel=1e-5)  # the file's 6 digits


@pytest.mark.slow
def test_a_test_false_search_runs_its_trials_to_the_end(tmp_path):
    # tune's default val_split with test=false, and the trial listed as finished, on a private Ray
    pytest.importorskip("ray", reason="the `ray` extra is not installed (scripts/install.sh test installs it)")
    require_loopback_namespace()
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "cifarlab", "tune", "vgg3", "test=false", "eval_batch_size=500",
           "--param", "lr=choice(0.01)", "--samples", "1", "--epochs", "2", "--subset", "200", "--cpus", "1",
           "--out", str(out)]
    p = subprocess.run(loopback_only(cmd), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(out / "tune.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["status"], row["epochs"]) == ("finished", "2") and math.isnan(float(row["test_acc"]))
    cfg = load_file(f"{row['run']}/config.yaml")
    assert (cfg.test, cfg.subset, cfg.val_split) == (False, 200, 20)
    assert json.loads((out / "trials" / row["trial"] / "run" / "summary.json").read_text())["test_acc"] is None
