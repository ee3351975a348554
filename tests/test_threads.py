"""The default thread count: the cores other work leaves free, chosen when a run starts, recorded,
and kept when the run resumes (the count changes the order of fp32 sums)."""
import contextlib
import os
import subprocess
import sys

import pytest
import torch

from cifarlab.bench.throughput import busy_processes
from cifarlab.config import apply_overrides, load_preset
from cifarlab.engine import free_threads, setup_threads, threads_of
from cifarlab.machine import _cpu_times, busy_cores
from cifarlab.runfolder import read_metrics
from cifarlab.train import train

VALUES = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]
TINY = ["subset=600", "val_split=100", "epochs=2", "widths=[8,8,8]", "dense=16", "test=false", "eval_batch_size=500"]


@contextlib.contextmanager
def kept_threads():
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("share, busy, cpus, expected", [
    (2, None, 2, 2),  # nothing measured: the whole share
    (2, 0.2, 2, 2),   # a little background work takes no core
    (2, 1.0, 2, 1),   # one busy process on two cores
    (2, 2.0, 2, 1),   # all busy: still one thread
    (4, 1.0, 4, 3),
    (2, 1.0, 4, 2),   # a share of 2 on 4 cores with 3 free
])
def test_free_threads(share, busy, cpus, expected, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert free_threads(share, busy) == expected


def test_cpu_times_reads_proc_stat_and_refuses_what_is_not(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 20 0 0 0 0 0\n")
    assert _cpu_times(stat) == (155, 1000)  # idle and iowait are not busy
    stat.write_text("intr 12345\n")
    assert _cpu_times(stat) is None
    assert _cpu_times(tmp_path / "absent") is None
    assert busy_cores(0.01, tmp_path / "absent") is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="/proc/stat is Linux's")
def test_busy_cores_sees_a_busy_process():
    with busy_processes(1):
        assert busy_cores(0.5) >= 0.7


def test_a_set_count_is_kept_as_set():
    with kept_threads():
        assert setup_threads(apply_overrides(load_preset("vgg3"), ["threads=3"])) == ""
        assert torch.get_num_threads() == 3
        assert setup_threads(load_preset("vgg3"), threads=2) == "" and torch.get_num_threads() == 2


def test_threads_of_older_segments_reads_the_device_line():
    assert threads_of([{"threads": 3, "device": "cpu (x, 2 threads)"}]) == 3
    assert threads_of([{"device": "cpu (AMD EPYC (family 25 model 17, avx512+bf16), 2 threads)"}]) == 2
    assert threads_of([{"device": "NVIDIA H200"}]) is None and threads_of([]) is None


class Stop(Exception):
    pass


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.exists("/proc/stat"), reason="needs 2 cores")
def test_a_default_run_beside_busy_work_takes_the_free_cores_and_keeps_them_on_resume(tmp_path):
    cfg = apply_overrides(load_preset("vgg3"), TINY)
    lines = []

    def stop_after_epoch_one(line):
        lines.append(line)
        if line.lstrip().startswith("2 "):  # epoch 2's row comes before its checkpoint: epoch 1's is the last
            raise Stop

    with kept_threads():
        with busy_processes((os.cpu_count() or 1) - 1), pytest.raises(Stop):
            train(cfg, tmp_path / "run", progress=False, log=stop_after_epoch_one)
        assert any("1 CPU thread of" in x and "other work keeps" in x for x in lines), lines
        resumed = []
        s = train(None, tmp_path / "run", resume=True, progress=False, log=resumed.append)
        assert [g["threads"] for g in s["segments"]] == [1, 1]  # the quiet machine's resume kept the count
        assert any("kept on resume" in x for x in resumed), resumed
        twin = train(apply_overrides(cfg, ["threads=1"]), tmp_path / "twin", progress=False, log=lambda *a: None)
    assert twin["segments"][0]["threads"] == 1
    a, b = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "twin")
    assert [[r[k] for k in VALUES] for r in a] == [[r[k] for k in VALUES] for r in b]


@pytest.mark.slow
def test_the_threads_line_reaches_the_user(tmp_path, data_dir):
    """A run whose count was cut by other work says so on its console, with how to fix the count."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    with busy_processes((os.cpu_count() or 1) - 1):
        p = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg3", "--out",
                            str(tmp_path / "r"), *TINY, "epochs=1"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "CIFARLAB_DATA": str(data_dir)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "threads=N fixes the count" in p.stdout + p.stderr
