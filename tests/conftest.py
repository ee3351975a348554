"""Shared fixtures: the real CIFAR-10 copy beside the project, loaded once per session.

Only the tests that need the data set look for it: a test of a schedule or a config check
runs without it, and a test that needs it fails (never skips) where it is missing, saying
where it was looked for. `python3 -m pytest -m "not slow"` leaves out the tests marked
`slow` (another process, torchrun, Ray, Chromium, a mounted tmpfs, or seconds of training).
"""
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where a load finds nothing, it would download: tests never do, they fail at once instead.
NO_DOWNLOAD = "http://127.0.0.1:9/cifar-10-binary.tar.gz"


def expected_data() -> Path:
    """Where the suite takes CIFAR-10 from: $CIFARLAB_DATA, else ../shared/data/cifar-10-batches-bin."""
    env = os.environ.get("CIFARLAB_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "cifar-10-batches-bin"


def data_path() -> Path:
    """The CIFAR-10 folder; the calling test (or fixture) fails, with one line saying where it looked,
    where it is missing."""
    path = expected_data()
    if not path.exists():
        pytest.fail(f"CIFAR-10 not found at {path}: set CIFARLAB_DATA to the cifar-10-batches-bin folder "
                    "(this test needs the data set)", pytrace=False)
    return path


def pytest_report_header(config):
    path = expected_data()
    return f"CIFAR-10: {path}" + ("" if path.exists() else " (missing: the tests that need it fail)")


def pytest_terminal_summary(terminalreporter):
    path = expected_data()
    if not path.exists():
        terminalreporter.write_line(f"CIFAR-10 not found at {path}: every test that needs it fails; set "
                                    "CIFARLAB_DATA to the cifar-10-batches-bin folder", red=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_path()


@pytest.fixture(scope="session")
def cifar(data_dir):
    from cifarlab.data import load_cifar10
    return load_cifar10(data_dir, download_ok=False)


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, _isolated_cache, data_dir):
    """Two small real run folders holding different weights, to export: tests/fixtures/run_v0_interrupted
    as it is (stopped after epoch 1 of 2) and a copy of it resumed to the end of epoch 2."""
    from cifarlab.train import train
    root = tmp_path_factory.mktemp("two_runs")
    first, second = root / "epoch1", root / "epoch2"
    for run in (first, second):
        shutil.copytree(ROOT / "tests" / "fixtures" / "run_v0_interrupted", run)
    train(None, second, resume=True, progress=False, log=lambda *a: None)
    return first, second


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The session (and the commands it starts) gets its own cache folder; data from CIFARLAB_DATA.
    Without the data set, CIFARLAB_DATA still names where it was looked for and a load that finds
    nothing fails at once (no download), so a test that trains without asking for `data_dir` fails
    saying "CIFAR-10 not found" with that folder, as the ones that ask for it do."""
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "CIFARLAB_DATA", "CIFARLAB_URL", "PYTHONPATH")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.getbasetemp() / "cache")
    data = expected_data()
    os.environ["CIFARLAB_DATA"] = str(data)
    if not data.exists():
        os.environ["CIFARLAB_URL"] = NO_DOWNLOAD
    # commands started by tests (python -m cifarlab ...) import this tree too
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), saved["PYTHONPATH"]]))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# A small real study shared by test_study.py and test_report.py: three presets, two
# seeds, on a 1,000-image subset. It is interrupted once (the study process killed
# with SIGKILL while runs are in flight) and run again; what was on disk at the kill
# and the second invocation's counts are returned for the tests to check.
STUDY_ARGS = ["--only", "vgg3,dropout,bn_only", "--seeds", "2", "--workers", "2",
              "subset=1000", "val_split=200", "epochs=3", "eval_batch_size=500"]


def _run_states(study):
    out = {}
    for d in sorted(study.glob("runs/*/seed*")):
        key = f"{d.parent.name}/{d.name}"
        if (d / "summary.json").is_file():
            out[key] = ("finished", (d / "summary.json").read_bytes())
        elif (d / "checkpoint.pt").is_file():
            out[key] = ("partial", None)
    return out


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, data_dir):
    import fcntl
    import json as _json
    import signal
    import subprocess
    import sys
    import time
    study = tmp_path_factory.mktemp("study") / "s"
    cmd = [sys.executable, "-m", "cifarlab", "study", "--out", str(study), *STUDY_ARGS]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    # Kill once one run has finished while another is part-way (a checkpoint, no summary).
    while True:
        states = _run_states(study)
        kinds = [k for k, _ in states.values()]
        if "finished" in kinds and "partial" in kinds:
            break
        assert first.poll() is None and time.time() < deadline, "the study ended before it could be interrupted"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # the parent only: its workers must notice and stop
    first.communicate()
    # Orphaned workers exit by themselves; then every run's lock is free.
    for lock in study.glob("runs/*/seed*/.lock"):
        with open(lock) as f:
            t0 = time.time()
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    assert time.time() - t0 < 20, f"a worker still holds {lock} after the study was killed"
                    time.sleep(0.1)
    at_kill = _run_states(study)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    meta = _json.loads((study / "study.json").read_text())
    return {"dir": study, "at_kill": at_kill, "log": second.stdout, "meta": meta}
