"""Faults a careless or a hostile user meets, each with the real thing: hostile checkpoint
and tar files, kill -9 inside a checkpoint write and a cache write, Ctrl-C in a download,
a full disk during a checkpoint write, a damaged array cache."""
import contextlib
import errno
import http.server
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cifarlab
from cifarlab import checkpoint, cli
from cifarlab import data as D
from cifarlab.config import apply_overrides, load_preset
from cifarlab.files import WriteError, writer_tag
from cifarlab.inference.predict import ModelError
from cifarlab.train import train

# A run small enough to train in about a second an epoch on one thread.
TINY = ["subset=500", "val_split=100", "epochs=2", "test=false", "threads=1", "eval_batch_size=500"]
HISTORY = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]  # everything but timings


def _quiet(*a, **k):
    pass


def _same_run(a: Path, b: Path) -> None:
    """Two finished run folders hold the same training: weights, optimiser and history."""
    sa, sb = checkpoint.load(a / "checkpoint.pt"), checkpoint.load(b / "checkpoint.pt")
    assert sa["epoch"] == sb["epoch"] == 2
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], sb["optimizer"]["state"][k]["momentum_buffer"])
    assert [[r[k] for k in HISTORY] for r in sa["history"]] == [[r[k] for k in HISTORY] for r in sb["history"]]
    assert json.loads((b / "summary.json").read_text())["val_acc_last"] == \
        json.loads((a / "summary.json").read_text())["val_acc_last"]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")) or p.name.startswith(".extract")]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The tiny run, trained without interruption."""
    out = tmp_path_factory.mktemp("twin") / "run"
    train(apply_overrides(load_preset("vgg1"), TINY), out, progress=False, log=_quiet)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory, cifar):
    from PIL import Image
    path = tmp_path_factory.mktemp("img") / "frog.png"
    Image.fromarray(cifar.x_test[0].transpose(1, 2, 0)).save(path)
    return path


def _cli(capsys, *args) -> tuple[int, str]:
    rc = cli.main([str(a) for a in args])
    return rc, capsys.readouterr().err


# --- hostile and damaged checkpoints -----------------------------------------------------

class _Plant:
    """Unpickling this calls os.system: the way code hides in a .pt file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_hostile_checkpoint_runs_nothing(twin, image, tmp_path, capsys):
    """A checkpoint-shaped file whose unpickling would create a marker file: every way into
    it (predict, cifarlab.load, evaluate, export, train --resume, a study resuming the run,
    the report's best run) refuses it in one line naming the file, and the marker never appears."""
    marker = tmp_path / "MARKER"
    state = checkpoint.load(twin / "checkpoint.pt")
    state["history"].append(_Plant(marker))
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        shutil.copy(twin / name, run / name)
    (run / "summary.json").unlink()  # a run to resume
    torch.save(state, run / "checkpoint.pt")
    raw = tmp_path / "raw.pt"  # a bare pickle, no torch container
    raw.write_bytes(pickle.dumps({"config": {}, "model": _Plant(marker)}, protocol=2))
    assert not marker.exists()

    for path in (run / "checkpoint.pt", raw):
        with pytest.raises(checkpoint.CheckpointError, match="refused to load.*nothing in it was run") as e:
            checkpoint.load(path)
        assert str(path) in str(e.value) and "posix.system" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(checkpoint.CheckpointError, match="refused to load"):
        cifarlab.load(run)
    for args in (["predict", run / "checkpoint.pt", image], ["predict", raw, image], ["evaluate", run],
                 ["export", run, "--format", "safetensors", "--out", tmp_path / "exp"],
                 ["train", "--resume", run, "--quiet"]):
        rc, err = _cli(capsys, *args)
        assert rc == 2, args
        assert err.count("\n") == 1 and "refused to load" in err and "Traceback" not in err, err
        assert str(raw if raw in args else run / "checkpoint.pt") in err
    from cifarlab.study.jobs import Job, run_job
    r = run_job(Job("vgg1", 0, tuple(TINY), str(run)))
    assert r["status"] == "failed" and "refused to load" in r["error"]
    from cifarlab.reporting.report import best_run_analysis
    with pytest.raises(checkpoint.CheckpointError, match="refused to load"):
        best_run_analysis({"dir": run, "summary": {}})
    # and in a fresh process, as a user would meet it
    p = subprocess.run([sys.executable, "-m", "cifarlab", "predict", str(run / "checkpoint.pt"), str(image)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "refused to load" in p.stderr, p.stderr
    assert not marker.exists()
    assert not (tmp_path / "exp" / "model.safetensors").exists()


def test_damaged_checkpoint_is_one_clear_line(twin, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(twin, run)
    (run / "summary.json").unlink()
    whole = (run / "checkpoint.pt").read_bytes()
    for content, says in ((whole[:len(whole) // 2], "failed finding central directory"),
                          (b"", "empty or ends early"), (b"not a checkpoint\n" * 9, "damaged, or not a checkpoint"),
                          (b"hello world" * 9, "not a file torch.save wrote")):
        (run / "checkpoint.pt").write_bytes(content)
        rc, err = _cli(capsys, "train", "--resume", run, "--quiet")
        assert rc == 2 and err.count("\n") == 1 and says in err and str(run / "checkpoint.pt") in err, err
    torch.save({"some": torch.zeros(2)}, run / "checkpoint.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a cifarlab checkpoint"):
        checkpoint.load(run / "checkpoint.pt")


def test_checkpoint_of_earlier_format_loads_and_resumes_exactly(twin, tmp_path):
    """Checkpoints written before the RNG state was stored as tensors hold NumPy's state as
    an array (and torch's version string as its own str subclass); they load with only
    those types allowed, and a resume from one ends exactly where the uninterrupted run did."""
    class Stop(Exception):
        pass

    def stop(row, model, run_dir):
        raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        train(apply_overrides(load_preset("vgg1"), TINY), out, progress=False, log=_quiet, on_epoch=stop)
    state = checkpoint.load(out / "checkpoint.pt")
    kind, key, *rest = state["rng"]["numpy"]
    state["rng"]["numpy"] = (kind, key.numpy().astype(np.uint32), *rest)
    state["versions"]["torch"] = torch.__version__
    torch.save(state, out / "checkpoint.pt")  # as the earlier code wrote it
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(out / "checkpoint.pt")
    assert "numpy.ndarray" in unsafe and "torch.torch_version.TorchVersion" in unsafe
    train(None, out, resume=True, progress=False, log=_quiet)
    _same_run(twin, out)
    # what is written now needs nothing beyond tensors and plain values
    assert torch.serialization.get_unsafe_globals_in_checkpoint(out / "checkpoint.pt") == []


# --- kill -9 and temporaries -------------------------------------------------------------

# Runs `cifarlab train` with its second checkpoint write held open once the data is in
# the temporary file, so the test can kill -9 the process inside that write.
_SLOW_SECOND_SAVE = """
import os, sys, time, torch
from cifarlab import checkpoint
real, calls = checkpoint.save, []
def save(path, state):
    calls.append(path)
    if len(calls) < 2:
        return real(path, state)
    def write(f):
        torch.save(state, f)
        f.flush()
        open(os.environ["IN_WRITE"], "w").close()
        time.sleep(300)
    checkpoint.atomic_write(path, write)
checkpoint.save = save
from cifarlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_inside_checkpoint_write_then_resume_leaves_no_temporary(twin, tmp_path):
    out, flag = tmp_path / "run", tmp_path / "in-write"
    p = subprocess.Popen([sys.executable, "-c", _SLOW_SECOND_SAVE, "train", "--preset", "vgg1", "--out", str(out),
                          "--quiet", *TINY], env={**os.environ, "IN_WRITE": str(flag)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not flag.exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()[0]
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    left = list(out.glob(".checkpoint.pt.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 0  # killed inside the write
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] == 1  # the previous checkpoint is whole
    # a temporary whose writer is alive (another process, on this host) must survive the sweep
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        kept = out / f".metrics.csv.{live.pid}@{writer_tag().split('@')[1]}.abcdefgh.tmp"
        kept.write_text("being written")
        r = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--resume", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "resuming" in r.stdout and "after epoch 1" in r.stdout
        assert _temporaries(out) == [kept]
    finally:
        live.kill()
        live.wait()
    kept.unlink()
    _same_run(twin, out)


@pytest.mark.slow
def test_sigkill_inside_cache_write_is_swept_by_the_next_load(data_dir, cifar, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    arrays = cache / "cifarlab" / "arrays"
    code = "import sys; from cifarlab.data import load_cifar10; load_cifar10(sys.argv[1], download_ok=False)"
    p = subprocess.Popen([sys.executable, "-c", code, str(data_dir)])
    deadline = time.time() + 300
    while not list(arrays.glob(".*.tmp")):
        assert p.poll() is None and time.time() < deadline, "the load ended before its cache write was seen"
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(list(arrays.glob(".*.tmp"))) == 1 and not list(arrays.glob("*.npz"))
    ds = D.load_cifar10(data_dir, download_ok=False)
    np.testing.assert_array_equal(ds.x_train, cifar.x_train)
    assert _temporaries(cache) == [] and len(list(arrays.glob("*.npz"))) == 1


@pytest.mark.slow
def test_damaged_array_cache_is_rebuilt_and_said_in_one_line(data_dir, cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    D.load_cifar10(data_dir, download_ok=False)
    (npz,) = (tmp_path / "cifarlab" / "arrays").glob("*.npz")
    whole = npz.read_bytes()
    for damaged in (whole[:-100], b"", whole[:1000] + b"\0" * 5000 + whole[6000:]):
        npz.write_bytes(damaged)
        capsys.readouterr()
        ds = D.load_cifar10(data_dir, download_ok=False)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is damaged" in err and "rebuilding" in err and str(npz) in err, err
        np.testing.assert_array_equal(ds.x_test, cifar.x_test)
        np.testing.assert_array_equal(ds.y_train, cifar.y_train)
        with np.load(npz) as z:  # rebuilt in place
            np.testing.assert_array_equal(z["y_test"], cifar.y_test)
    D.load_cifar10(data_dir, download_ok=False)
    assert capsys.readouterr().err == ""


@pytest.fixture
def stalled_server():
    """Serves a 10 MB download that sends its first 64 KiB and then stalls."""
    sent, release = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(10 << 20))
            self.end_headers()
            self.wfile.write(b"\0" * (64 << 10))
            self.wfile.flush()
            sent.set()
            release.wait(60)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-binary.tar.gz", sent
    release.set()
    server.shutdown()


@pytest.mark.slow
def test_ctrl_c_during_download_leaves_no_part_file(stalled_server, tmp_path):
    url, sent = stalled_server
    cache, empty = tmp_path / "cache", tmp_path / "empty"
    empty.mkdir()
    (cache / "cifarlab").mkdir(parents=True)
    stale = cache / "cifarlab" / "cifar-10-binary.tar.gz.part"  # an earlier version's leftover, hours old
    stale.write_bytes(b"\0" * 1000)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    env = {k: v for k, v in os.environ.items() if k != "CIFARLAB_DATA"}
    env.update(XDG_CACHE_HOME=str(cache), CIFARLAB_URL=url)
    p = subprocess.Popen([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg1", "--out",
                          str(tmp_path / "run"), "--data", str(empty), "--quiet", *TINY], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (sent.is_set() and list(cache.rglob(".*.part"))):
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.02)
    assert not stale.exists()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert _temporaries(cache) == []
    assert not (cache / "cifarlab" / "cifar-10-binary.tar.gz").exists()


def _ctrl_c_inside_an_import(*a, **k):
    """What a C extension's import does when Ctrl-C lands inside it (matplotlib's Agg
    backend, loaded for the first curves.png): the KeyboardInterrupt comes out as the
    extension's own ImportError."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the handler raises here
    except KeyboardInterrupt:
        raise ImportError("initialization failed") from None
    raise AssertionError("SIGINT did not arrive")


def _import_fails(*a, **k):
    raise ImportError("initialization failed")


@pytest.mark.slow
def test_ctrl_c_that_turns_into_another_error_is_still_an_interruption(twin, tmp_path, capsys, monkeypatch):
    """Ctrl-C while the first curves.png loads matplotlib: `train` says interrupted (exit 130,
    the resume command, no traceback) and resumes to the uninterrupted result; a study's run
    is interrupted, not failed, and its train.log says so. The same ImportError without
    Ctrl-C is still an error."""
    run = tmp_path / "run"
    monkeypatch.setattr("cifarlab.train._plot", _import_fails)
    with pytest.raises(ImportError):
        cli.main(["train", "--preset", "vgg1", "--out", str(run), "--quiet", *TINY])
    monkeypatch.setattr("cifarlab.train._plot", _ctrl_c_inside_an_import)
    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN where this process began ignoring it
    rc, err = _cli(capsys, "train", "--preset", "vgg1", "--out", run, "--quiet", "--force", *TINY)
    assert rc == 130, err
    assert f"cifarlab train: interrupted; it resumes with `cifarlab train --resume {run}`" in err, err
    assert "Traceback" not in err and "ImportError" not in err, err
    assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # the command put back what it found

    study = tmp_path / "study"
    rc, err = _cli(capsys, "study", "--out", study, "--only", "vgg1", "--backend", "inline", *TINY)
    log = (study / "runs" / "vgg1" / "seed0" / "train.log").read_text()
    assert rc == 130 and "cifarlab study: interrupted" in err, err
    assert log.rstrip().endswith("interrupted; the run resumes from its last checkpoint"), log
    assert "Traceback" not in log and "failed" not in err, (log, err)

    monkeypatch.undo()
    train(None, run, resume=True, progress=False, log=_quiet)
    _same_run(twin, run)


@pytest.mark.parametrize("found", [signal.default_int_handler, signal.SIG_IGN, signal.SIG_DFL],
                         ids=["python-handler", "ignored", "system-default"])
def test_a_command_answers_ctrl_c_and_puts_back_the_sigint_handler_it_found(found, capsys, monkeypatch):
    """Whatever SIGINT meant to the process before (Python's KeyboardInterrupt; ignored, as in a job a
    shell started in the background; the system's default), a command stopped by Ctrl-C says
    interrupted (exit 130) and leaves SIGINT as it found it."""
    def ctrl_c(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the handler raises here
        raise AssertionError("SIGINT did not arrive")

    monkeypatch.setattr("cifarlab.cli.presets.load_preset", ctrl_c)
    saved = signal.signal(signal.SIGINT, found)
    try:
        rc, err = _cli(capsys, "presets")
        now = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, saved)
    assert rc == 130 and err.strip() == "cifarlab presets: interrupted", err
    assert now is found


# Runs `cifarlab export` with the rename of one file into the export folder held open (the path
# in PAUSE_AT), so the test can kill -9 the export there.
_PAUSE_IN_EXPORT = """
import os, sys, time
real = os.replace
def replace(src, dst, *a, **k):
    if os.fspath(dst) == os.environ["PAUSE_AT"]:
        open(os.environ["PAUSED"], "w").close()
        time.sleep(300)
    return real(src, dst, *a, **k)
os.replace = replace
from cifarlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _export_state(out: Path) -> str:
    """What loading the export folder finds: "no model.json", or the weights model.json lists, each
    checked against its SHA-256 (an AssertionError if any is missing or differs)."""
    import hashlib
    if not (out / "model.json").exists():
        with pytest.raises(ModelError, match="no model.json"):
            cifarlab.load(out, "cpu")
        return "no model.json"
    files = json.loads((out / "model.json").read_text())["files"]
    for name, entry in files.items():
        assert (out / name).is_file(), f"model.json lists {name}, which is missing"
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"], f"{name} is not its own"
    return ", ".join(sorted(files))


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["model.safetensors", "model.json"])
def test_an_export_killed_while_moving_into_place_leaves_no_model_json_over_other_weights(two_runs, cifar, tmp_path,
                                                                                         pause_at):
    """An export of other weights over an earlier export, killed with SIGKILL as it moves its weights,
    then its model.json, into the folder: no model.json there describes missing or different
    weights (loading says model.json is missing), and the export run again completes, sweeping
    what the killed one left."""
    first, second = two_runs
    out, paused = tmp_path / "exp", tmp_path / "paused"
    assert cli.main(["export", str(first), "--format", "safetensors", "--out", str(out)]) == 0
    assert _export_state(out) == "model.safetensors"
    p = subprocess.Popen([sys.executable, "-c", _PAUSE_IN_EXPORT, "export", str(second), "--format", "safetensors",
                          "--out", str(out)], env={**os.environ, "PAUSE_AT": str(out / pause_at),
                                                   "PAUSED": str(paused)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not paused.exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()[0]
        time.sleep(0.02)
    assert _export_state(out) == "no model.json"  # while it is paused there ...
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert _export_state(out) == "no model.json"  # ... and once it is killed there
    assert len(list(out.glob(".export.*"))) == 1  # its build folder, swept by the next export
    assert cli.main(["export", str(second), "--format", "safetensors", "--out", str(out)]) == 0
    assert _export_state(out) == "model.safetensors" and not list(out.glob(".*"))
    x = torch.from_numpy(cifar.x_test[:100])
    torch.testing.assert_close(cifarlab.load(out, "cpu").logits(x), cifarlab.load(second, "cpu").logits(x))


# --- hostile archives --------------------------------------------------------------------

def _archive(folder: Path, *members) -> Path:
    """cifar-10-binary.tar.gz holding one real-looking file plus the given (TarInfo, bytes) members."""
    folder.mkdir(parents=True)
    path = folder / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-bin/readme.html")
        ok.size = 5
        tar.addfile(ok, io.BytesIO(b"hello"))
        for info, content in members:
            info.size = len(content) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return path


def _member(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, b"planted"


@pytest.mark.parametrize("library_filter", [True, False], ids=["with-data-filter", "own-checks-only"])
def test_crafted_archive_extracts_nothing_outside(tmp_path, monkeypatch, library_filter):
    """Path traversal, an absolute path, a symlink pointing out and a file written through it,
    a hard link, a device: each archive is refused in one line and nothing lands anywhere,
    with or without tarfile's own data filter (Python before 3.10.12 / 3.11.4 lacks it)."""
    if not library_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = {
        "traversal": [_member("cifar-10-batches-bin/../../../outside/planted")],
        "absolute": [_member(str(outside / "planted-abs"))],
        "symlink": [_member("cifar-10-batches-bin/out", tarfile.SYMTYPE, str(outside)),
                    _member("cifar-10-batches-bin/out/planted-via-link")],
        "hardlink": [_member("cifar-10-batches-bin/passwd", tarfile.LNKTYPE, "/etc/passwd")],
        "device": [_member("cifar-10-batches-bin/null", tarfile.CHRTYPE)],
    }
    for case, members in cases.items():
        archive = _archive(tmp_path / case / "a" / "b", *members)
        dest = archive.parent
        with pytest.raises(D.DataError, match="refused to unpack") as e:
            D._extract(archive, dest)
        msg = str(e.value)
        assert str(archive) in msg and repr(members[0][0].name) in msg and "nothing was extracted" in msg, msg
        # the archive, and the lock file unpacking holds (empty)
        assert sorted(p.name for p in dest.iterdir()) == [".cifar-10-batches-bin.lock", "cifar-10-binary.tar.gz"]
        assert (dest / ".cifar-10-batches-bin.lock").stat().st_size == 0, case
    planted = [p for p in tmp_path.rglob("*") if "planted" in p.name or p.name in ("passwd", "null", "out")]
    assert planted == [] and list(outside.iterdir()) == []


# --- disk full ---------------------------------------------------------------------------

def _open_files_under(folder: Path) -> list[str]:
    """The files under `folder` that this process holds open."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder) + os.sep):
                out.append(target)
    return out


@pytest.mark.slow
def test_disk_full_in_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(twin, data_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    """A run on a 12 MB file system: the first checkpoint (8.5 MB) fits, the second does not
    fit beside it. The run stops with one line, epoch 1's checkpoint whole and no temporary;
    moved to a disk with room, it resumes to the uninterrupted result. The data cache
    (185 MB) on that disk: the data still loads, and no partial cache file stays."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here to make a small file system to fill")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill ({r.stderr.strip() or r.returncode})")
    try:
        run = mnt / "run"
        rc, err = _cli(capsys, "train", "--preset", "vgg1", "--out", run, "--quiet", *TINY)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"could not write {run / 'checkpoint.pt'}: No space left on device" in err, err
        assert "previous checkpoint.pt is unchanged" in err and f"--resume {run}" in err, err
        assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 1
        assert _temporaries(mnt) == []
        moved = tmp_path / "moved"
        shutil.copytree(run, moved)
        monkeypatch.setenv("XDG_CACHE_HOME", str(mnt / "cache"))
        ds = D.load_cifar10(data_dir, download_ok=False)
        assert len(ds.y_train) == 50000 and not list(mnt.rglob("*.npz")) and _temporaries(mnt) == []
        assert _open_files_under(mnt) == []  # the stopped run holds nothing (an event file, say) open
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)])  # detached, so tmp_path can still be cleaned
    train(None, moved, resume=True, progress=False, log=_quiet)
    _same_run(twin, moved)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """The one write helper every file goes through: ENOSPC at fsync (where a full disk
    shows on some file systems) leaves the old file and no temporary behind."""
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"config": {}, "model": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as e:
        checkpoint.save(path, {"config": {}, "model": {"w": torch.zeros(3)}})
    assert str(e.value) == f"could not write {path}: No space left on device; the previous checkpoint.pt is unchanged"
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.slow
def test_sweep_removes_only_temporaries_without_a_live_writer(tmp_path):
    """Same host: the writer's PID decides (a live PID unchanged for a day was reused);
    another host or a name without a writer (earlier versions): ten minutes unchanged."""
    from cifarlab.files import sweep
    host = writer_tag().split("@")[1]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    hour, days = time.time() - 3600, time.time() - 2 * 86400

    def make(name, mtime=None):
        (tmp_path / name).write_text("x")
        if mtime:
            os.utime(tmp_path / name, (mtime, mtime))
        return name
    try:
        gone = {make(f".a.{dead.pid}@{host}.r1.tmp"), make(f".b.{live.pid}@{host}.r2.tmp", days),
                make(".c.7@elsewhere.r3.tmp", hour), make(".checkpoint.pt.abcd1234.tmp", hour)}
        kept = {make(f".d.{live.pid}@{host}.r4.tmp", hour), make(f".e.{os.getpid()}@{host}.r5.tmp", days),
                make(".f.7@elsewhere.r6.tmp"), make(".g.abcd1234.tmp"), make("notes.txt", days)}
        removed = sweep(tmp_path, ".*.tmp")
    finally:
        live.kill()
        live.wait()
    assert {p.name for p in removed} == gone
    assert {p.name for p in tmp_path.iterdir()} == kept


def test_hostile_python_version_batch_runs_nothing(cifar, tmp_path):
    """The python version is pickled: even a file whose MD5 was accepted is read with an
    unpickler that builds NumPy arrays and plain values only."""
    marker = tmp_path / "MARKER"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = (cifar.x_test, cifar.y_test) if name == "test_batch" else (cifar.x_train[:10], cifar.y_train[:10])
        batch = {b"data": x.reshape(len(x), -1), b"labels": y.tolist()}
        if i == 2:
            batch[b"batch_label"] = _Plant(marker)
        (folder / name).write_bytes(pickle.dumps(batch))
    md5s = {name: D.md5sum(folder / name) for name in names}
    with pytest.raises(D.DataError, match="refused to unpickle: it would call posix.system; nothing in it was run"):
        D.read_py_folder(folder, md5s)
    assert not marker.exists()
