"""torchrun with 2 CPU processes (gloo) trains the run one process trains, and resumes it.

Reference and DDP runs use the same global batch (63: the ranks get 32 and 31 images,
so the share weighting is exercised at every step), one thread per process, no BN, no
dropout: the only difference is the order of floating-point sums (the gradient
all-reduce, and the per-rank convolutions). How large that noise is here: the same
single-process run with 1 and with 2 threads differs by ~2e-4 in the epoch-2 train loss
and by one or two validation images; the tolerances below are a few times that.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from cifarlab.config import apply_overrides, load_preset
from cifarlab.runfolder import read_metrics
from cifarlab.train import train
from netns import loopback_only, require_loopback_namespace

pytestmark = pytest.mark.slow  # every test here starts other processes

RUN = ["subset=1000", "val_split=190", "epochs=2", "seed=1", "batch_size=63", "threads=1",
       "eval_batch_size=500"]


def torchrun(*args, nproc=2):
    require_loopback_namespace()
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr", "127.0.0.1", "--master_port", "29511",
           "-m", "cifarlab", "train", "--quiet", *args]
    return subprocess.run(loopback_only(cmd), capture_output=True, text=True, timeout=300)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    train(apply_overrides(load_preset("vgg3"), RUN), out, progress=False, log=lambda *a: None)
    return out


def assert_agree(a_dir, b_dir):
    a, b = read_metrics(a_dir), read_metrics(b_dir)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2]
    # after 13 steps the two still agree to the fifth digit
    assert a[0]["train_loss"] == pytest.approx(b[0]["train_loss"], abs=1e-4)
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-3)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], abs=1e-3)
        assert abs(ra["train_acc"] - rb["train_acc"]) <= 4 / 810  # 810 training images
        assert abs(ra["val_acc"] - rb["val_acc"]) <= 6 / 190
    sa = json.loads((a_dir / "summary.json").read_text())
    sb = json.loads((b_dir / "summary.json").read_text())
    assert sa["test_loss"] == pytest.approx(sb["test_loss"], abs=1e-3)
    assert abs(sa["test_acc"] - sb["test_acc"]) <= 0.01
    assert sa["steps_per_epoch"] == sb["steps_per_epoch"] == 13
    # the test set's confusion matrix, gathered over both processes' shares: every image once
    for s in (sa, sb):
        m = np.array(s["test_confusion"]["matrix"])
        assert m.sum() == 10_000 and (m.sum(1) == 1000).all() and np.trace(m) / 10_000 == pytest.approx(s["test_acc"])


def files(run_dir) -> list[str]:
    """A run folder's file names, TensorBoard's (named by host, process and time) by their kind."""
    return sorted("events.out.tfevents.*" if x.name.startswith("events.out.tfevents.") else x.name
                  for x in run_dir.iterdir())


def test_two_processes_train_the_single_process_run(reference, tmp_path):
    out = tmp_path / "ddp"
    p = torchrun("--preset", "vgg3", "--out", str(out), *RUN)
    assert p.returncode == 0, p.stdout + p.stderr
    assert_agree(reference, out)
    s = json.loads((out / "summary.json").read_text())
    assert s["processes"] == 2 and "processes" not in json.loads((reference / "summary.json").read_text())
    # rank 0 alone writes and speaks: the same files as a single run, one table, one result line
    assert files(out) == files(reference)
    assert p.stdout.count("test accuracy") == 1
    assert p.stdout.count("train_loss") == 1
    assert "x 2 processes" in p.stdout


def test_run_interrupted_alone_resumes_on_two_processes(reference, tmp_path):
    out = tmp_path / "run"

    def stop_after_first(row, model, run_dir):
        if row["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(apply_overrides(load_preset("vgg3"), RUN), out, progress=False, log=lambda *a: None,
              on_epoch=stop_after_first)
    assert len(read_metrics(out)) == 1 and not (out / "summary.json").exists()
    p = torchrun("--resume", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"resuming {out} after epoch 1" in p.stdout
    assert_agree(reference, out)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    p = torchrun("--preset", "vgg3", "--out", str(tmp_path / "bn"), "batchnorm=true", "sync_bn=true", *RUN)
    assert p.returncode != 0
    assert "sync_bn=true needs GPUs" in p.stderr
