"""`cifarlab study --backend ray --address`: a Ray cluster on loopback runs the study the local backend runs.

The test starts its own cluster (`ray start --head` on 127.0.0.1, a free port, its own
temp folder), runs a two-preset study through `--address`, runs it again (everything
skipped), stops the cluster, and compares the folder with the local backend's: the
same runs, the same files, the same numbers. All of it inside a private network and
PID namespace (tests/netns.py), so neither the cluster nor `ray stop` touches
anything else on the machine.
"""
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netns import loopback_only, require_loopback_namespace

pytestmark = pytest.mark.slow  # every test here starts other processes

STUDY = ["--only", "vgg1,vgg3", "--seeds", "1", "--workers", "2", "subset=600", "val_split=60", "epochs=2",
         "eval_batch_size=500"]
TIMINGS = {"epoch_seconds", "images_per_second", "wall_seconds"}


def files(root: Path) -> set:
    """Every file below root; TensorBoard's (named by host, process and time) by their kind, counted."""
    names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    kinds = [n.split("events.out.tfevents.")[0] + "events.out.tfevents.*" if "events.out.tfevents." in n else n
             for n in names]
    return {(n, kinds.count(n)) for n in kinds}


def metrics(run: Path) -> list:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(f)]


def ray_cli() -> str:
    """The `ray` command of the Python running the tests."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def test_ray_cluster_writes_the_study_the_local_backend_writes(tmp_path):
    pytest.importorskip("ray", reason="the `ray` extra is not installed (scripts/install.sh test installs it)")
    require_loopback_namespace()
    local, remote = tmp_path / "local", tmp_path / "ray"
    p = subprocess.run([sys.executable, "-m", "cifarlab", "study", "--out", str(local), *STUDY],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr

    # room for the two workers' runs at once, each with the threads the study plans for it (its share of
    # this machine's cores, as in the local study): a run that needs more CPUs than a node has never starts
    from cifarlab.study.runner import threads_per_worker
    cpus = 2 * threads_per_worker(2)
    study = " ".join([sys.executable, "-m", "cifarlab", "study", "--backend", "ray",
                      "--address", "127.0.0.1:6390", "--out", str(remote), *STUDY])
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as temp:  # short: Ray's socket paths
        script = (f"{ray_cli()} start --head --node-ip-address=127.0.0.1 --port=6390 --num-cpus={cpus} "
                  f"--include-dashboard=false --disable-usage-stats --temp-dir={temp} >/dev/null || exit 90; "
                  f"{study}; a=$?; echo '=== again'; {study}; b=$?; {ray_cli()} stop --force >/dev/null; "
                  f"exit $((a * 10 + b))")
        r = subprocess.run(loopback_only(["sh", "-c", script]), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    first, again = r.stdout.split("=== again")
    assert "2 to run" in first and "backend ray" in first
    assert "0 to run" in again  # resume-and-skip: a finished run is never recomputed

    assert files(remote) == files(local)
    for run in ("runs/vgg1/seed0", "runs/vgg3/seed0"):
        assert metrics(remote / run) == metrics(local / run)
        sl = json.loads((local / run / "summary.json").read_text())
        sr = json.loads((remote / run / "summary.json").read_text())
        assert (sr["test_acc"], sr["test_loss"], sr["train_images"]) == \
            (sl["test_acc"], sl["test_loss"], sl["train_images"])
    ml, mr = (json.loads((d / "study.json").read_text()) for d in (local, remote))
    assert ml["settings"] == mr["settings"]
    assert [i["options"]["backend"] for i in mr["invocations"]] == ["ray", "ray"]
    assert mr["invocations"][0]["counts"]["trained"] == 2 and mr["invocations"][1]["counts"]["skipped"] == 2


def test_ray_options_belong_to_the_ray_backend(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cifarlab", "study", "--backend", "local", "--address", "x:1",
                        "--out", str(tmp_path / "s"), "--only", "vgg1"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "--address is an option of --backend ray" in p.stderr
