"""Training on real CIFAR-10 subsets: learning, determinism, the run folder, kill-and-resume."""
import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from cifarlab.config import apply_overrides, load_preset
from cifarlab.runfolder import read_metrics
from cifarlab.train import COLUMNS, train

# threads fixed: a default count follows the machine's load, and the count changes fp32 sums
SMALL = ["subset=2000", "val_split=500", "epochs=5", "lr=0.01", "eval_batch_size=500", "threads=1"]
VALUES = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "val_loss_l2"]  # everything but timings


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cifarlab", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = cli("--preset", "vgg3", "--out", str(out), "--quiet", *SMALL)
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log
    return out


@pytest.mark.slow
def test_baseline_learns_on_real_subset(tmp_path):
    cfg = apply_overrides(load_preset("vgg3"), ["subset=4000", "epochs=3", "lr=0.01"])
    s = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert s["test_acc"] > 0.30, s  # chance is 0.10; the full 10,000-image test set
    assert s["train_images"] == 4000 and s["val_is_test"] is True


@pytest.mark.slow
def test_run_folder_explains_itself(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.yaml", "metrics.csv", "curves.png", "summary.json", "checkpoint.pt"} <= names
    rows = read_metrics(reference_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert list(rows[0]) == COLUMNS
    s = json.loads((reference_run / "summary.json").read_text())
    for key in ("test_acc", "test_loss", "parameters", "wall_seconds", "device", "versions", "command"):
        assert key in s
    assert s["parameters"] == 550_570 and s["train_images"] == 1500 and s["val_is_test"] is False
    assert s["comparable"] is False  # epochs and subset were scaled away from the preset
    assert yaml.safe_load((reference_run / "config.yaml").read_text())["subset"] == 2000
    assert (reference_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_same_seed_same_run(reference_run, tmp_path):
    p = cli("--preset", "vgg3", "--out", str(tmp_path / "again"), "--quiet", *SMALL)
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log
    a, b = read_metrics(reference_run), read_metrics(tmp_path / "again")
    assert [[r[k] for k in VALUES] for r in a] == [[r[k] for k in VALUES] for r in b]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(reference_run, tmp_path):
    out = tmp_path / "killed"
    p = cli("--preset", "vgg3", "--out", str(out), "--quiet", *SMALL)
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists():
        assert p.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    done = len(read_metrics(out))
    assert 1 <= done < 5
    r = cli("--resume", str(out), "--quiet")
    log, _ = r.communicate(timeout=600)
    assert r.returncode == 0, log
    assert f"resuming {out} after epoch {done}" in log
    a, b = read_metrics(reference_run), read_metrics(out)
    assert [[x[k] for k in VALUES] for x in a] == [[x[k] for k in VALUES] for x in b]
    sa = json.loads((reference_run / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    assert (sa["test_acc"], sa["test_loss"]) == (sb["test_acc"], sb["test_loss"])
    # resuming a finished run changes nothing
    r = cli("--resume", str(out), "--quiet")
    log, _ = r.communicate(timeout=120)
    assert r.returncode == 0 and "already finished" in log


@pytest.mark.slow
def test_combined_model_with_augmentation_and_standardize_trains(tmp_path):
    cfg = apply_overrides(load_preset("vgg3"), [
        "subset=1000", "val_split=200", "epochs=1", "batchnorm=true", "dropout=[0.2,0.3,0.4,0.5]",
        "augment=shift_flip", "norm=standardize", "drop_last=true", "optimizer=adamw",
        "weight_decay=0.004", "schedule=cosine", "label_smoothing=0.1", "l2=0.001"])
    s = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert s["steps_per_epoch"] == 800 // 64
    assert abs(s["norm"]["mean"][0] - 125.3 / 255) < 0.03  # standardised by the training subset's stats
    assert 0 <= s["test_acc"] <= 1


@pytest.mark.slow
def test_progress_to_a_pipe_prints_lines_not_carriage_returns(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg3", "--out",
                        str(tmp_path / "r"), "subset=2000", "val_split=200", "epochs=1", "batch_size=16"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr
    bar_lines = [line for line in p.stderr.splitlines() if line.startswith("epoch 1/1 [")]
    assert len(bar_lines) >= 2  # a line at each quarter
    header = next(line for line in p.stdout.splitlines() if line.split()[:2] == ["epoch", "train_loss"])
    assert "img/s" in header and "lr" in header


def test_amp_native_is_bf16_only_where_it_is_the_faster_arithmetic():
    import torch
    from cifarlab.machine import cpu_bf16_faster, cpu_bf16_units, cpu_fields
    from cifarlab.engine import amp_dtype, bf16_units, native_bf16
    cpu = torch.device("cpu")
    info = open("/proc/cpuinfo").read().split("\n\n")[0]
    flags = next(line for line in info.splitlines() if line.startswith("flags")).split(":")[1].split()
    vendor = next(line for line in info.splitlines() if line.startswith("vendor_id")).split(":")[1].strip()
    assert bf16_units(cpu) == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert native_bf16(cpu) == ("amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD"))
    cfg = apply_overrides(load_preset("vgg3"), ["amp=native"])
    assert amp_dtype(cfg, cpu) == (torch.bfloat16 if native_bf16(cpu) else None)
    assert amp_dtype(apply_overrides(cfg, ["amp=auto"]), cpu) is None  # the study's presets: fp32 on a CPU
    assert amp_dtype(apply_overrides(cfg, ["amp=bf16"]), cpu) == torch.bfloat16  # asked for: always
    assert load_preset("fast94").amp == load_preset("fast_combined").amp == "native"
    # the CPUs measured: AMD Zen 5 (bf16 1.7x fp32), Intel model 207 without AMX exposed (0.6x),
    # the same with AMX, Cascade Lake (no bf16 instructions)
    base = cpu_fields()["flags"].replace("avx512_bf16", "").replace("amx_bf16", "")
    cpus = {("AuthenticAMD", "avx512_bf16"): True, ("GenuineIntel", "avx512_bf16"): False,
            ("GenuineIntel", "avx512_bf16 amx_bf16 amx_tile"): True, ("GenuineIntel", ""): False,
            ("AuthenticAMD", ""): False}
    for (vendor, extra), faster in cpus.items():
        fields = {"vendor_id": vendor, "flags": f"{base} {extra}"}
        assert cpu_bf16_faster(fields) is faster, (vendor, extra)
        assert cpu_bf16_units(fields) is bool(extra)


@pytest.mark.slow
def test_a_run_resumed_where_native_means_another_arithmetic_is_refused(tmp_path, monkeypatch):
    """amp=native resolves on the machine that runs each segment: a run started where bf16 is the
    faster arithmetic is not continued where it is not (it would go on in fp32), and its record
    stays as it was; a record whose segments mix arithmetics says which epochs ran in which."""
    import torch
    import cifarlab.engine as engine
    import cifarlab.train as tr
    cfg = apply_overrides(load_preset("vgg1"), ["widths=[8]", "dense=16", "subset=600", "val_split=100",
                                                "epochs=3", "amp=native"])
    run = tmp_path / "run"

    def stop_in_epoch_3(line):
        if line.lstrip().startswith("3 "):  # epoch 3's row: logged before its checkpoint
            raise KeyboardInterrupt

    # as on a machine where native means bf16; this CPU may have no bf16 instructions (bf16 is emulated then)
    monkeypatch.setattr(engine, "cpu_bf16_units", lambda: True)
    monkeypatch.setattr(engine, "cpu_bf16_faster", lambda: True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False, log=stop_in_epoch_3)
    assert len(read_metrics(run)) == 2
    before = (run / "metrics.csv").read_bytes(), (run / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(engine, "cpu_bf16_faster", lambda: False)
    with pytest.raises(tr.ArithmeticMismatch, match="trained its 2 epochs so far in bf16; here it would "
                                                    "continue in fp32"):
        train(None, run, resume=True, progress=False, log=lambda *a: None)
    assert ((run / "metrics.csv").read_bytes(), (run / "checkpoint.pt").read_bytes()) == before
    assert not (run / "summary.json").exists()
    monkeypatch.setattr(engine, "cpu_bf16_faster", lambda: True)  # where bf16 is native again, it finishes
    s = train(None, run, resume=True, progress=False, log=lambda *a: None)
    assert s["arithmetic"] == "bf16" and [g["arithmetic"] for g in s["segments"]] == ["bf16", "bf16"]
    mixed = [{"from_epoch": 0, "arithmetic": "bf16"}, {"from_epoch": 2, "arithmetic": "fp32"}]
    assert tr.run_arithmetic(mixed, torch.bfloat16, 3) == "bf16 (epochs 1-2), fp32 (epoch 3)"
    assert tr.run_arithmetic(mixed[:1], torch.bfloat16, 3) == "bf16"
    # a segment that stopped before its first epoch computed nothing; one of an older version says nothing
    same_start = [{"from_epoch": 0, "arithmetic": "fp32"}, {"from_epoch": 0, "arithmetic": "bf16"}]
    assert tr.run_arithmetic(same_start, torch.bfloat16, 3) == "bf16"
    assert tr.run_arithmetic([{"from_epoch": 0}], None, 3) == "fp32"
    # killed after its last checkpoint, before its summary: the session that writes it trained nothing
    after_the_last = [{"from_epoch": 0, "arithmetic": "bf16"}, {"from_epoch": 3, "arithmetic": "fp32"}]
    assert tr.run_arithmetic(after_the_last, None, 3) == "bf16"


def test_fp32_runs_turn_tf32_off_on_gpus():
    """On Ampere and later GPUs cuDNN computes fp32 convolutions in TF32 by default: a run without
    autocast (the study's fp32) turns that off, a bf16 run leaves it. The switches are torch's own
    process-wide settings, so they can be checked without a GPU."""
    import torch
    from cifarlab.engine import use_arithmetic
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        cuda = torch.device("cuda")
        assert use_arithmetic(apply_overrides(load_preset("vgg3"), ["amp=off"]), cuda) is None
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        assert use_arithmetic(apply_overrides(load_preset("vgg3"), ["amp=bf16"]), cuda) == torch.bfloat16
        assert torch.backends.cudnn.allow_tf32 is True
        torch.backends.cudnn.allow_tf32 = False
        assert use_arithmetic(load_preset("vgg3"), torch.device("cpu")) is None  # a CPU run touches nothing
        assert torch.backends.cudnn.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.slow
def test_fp16_trains_with_a_grad_scaler_kept_in_the_checkpoint(tmp_path):
    """fp16 autocast with loss scaling, on the CPU (emulated there: a tiny network, a few seconds
    an epoch); stopped after epoch 1 and resumed, it ends as the run that never stopped."""
    import math

    from cifarlab.checkpoint import load
    cfg = apply_overrides(load_preset("vgg1"), [
        "widths=[8]", "dense=16", "subset=1200", "val_split=200", "epochs=2", "threads=1", "test=false",
        "eval_batch_size=200", "device=cpu", "optimizer=adam", "lr=0.003", "amp=fp16"])
    s = train(cfg, tmp_path / "ref", progress=False, log=lambda *a: None)
    rows = read_metrics(tmp_path / "ref")
    assert s["arithmetic"] == "fp16"
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert s["val_acc_last"] > 0.15, rows  # chance is 0.10 (about 0.20 here, on 200 held-out images)
    scaler = load(tmp_path / "ref" / "checkpoint.pt")["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler

    class Stop(Exception):
        pass

    def stop(row, model, run_dir):
        raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", progress=False, log=lambda *a: None, on_epoch=stop)
    cut = load(tmp_path / "cut" / "checkpoint.pt")
    assert cut["epoch"] == 1 and "scaler" in cut  # the scaler as it was after epoch 1
    again = train(None, tmp_path / "cut", resume=True, progress=False, log=lambda *a: None)
    assert [[r[k] for k in VALUES] for r in rows] == [[r[k] for k in VALUES] for r in read_metrics(tmp_path / "cut")]
    assert again["val_acc_last"] == s["val_acc_last"]
    assert load(tmp_path / "cut" / "checkpoint.pt")["scaler"] == scaler


@pytest.mark.slow
def test_validation_loss_with_l2_is_recorded_as_keras_reports_it(tmp_path):
    """A run with `l2` records the validation cross-entropy (val_loss) and, as Keras's val_loss,
    the same plus the L2 penalty of the weights it was validated with (val_loss_l2); resumed, it
    records the same; a run without `l2` records the two equal. The curves draw from either."""
    import math

    import torch
    from cifarlab.optim import l2_penalty
    from cifarlab.plots import curves, penalised
    tiny = ["subset=1000", "val_split=100", "epochs=2", "threads=1", "test=false", "eval_batch_size=100"]
    cfg = apply_overrides(load_preset("weight_decay"), tiny)
    assert cfg.l2 == 0.001
    seen = []

    def penalty_now(row, model, run_dir):
        with torch.no_grad():
            seen.append((row, l2_penalty(model, cfg.l2).item()))

    train(cfg, tmp_path / "l2", progress=False, log=lambda *a: None, on_epoch=penalty_now)
    rows = read_metrics(tmp_path / "l2")
    assert len(seen) == len(rows) == 2
    for (row, pen), kept in zip(seen, rows):
        assert pen > 0.5  # about 1.2 for this network at the start: the gap the study's Figure 3 shows
        assert row["val_loss_l2"] == pytest.approx(row["val_loss"] + pen, rel=1e-6)
        assert kept["val_loss_l2"] == pytest.approx(kept["val_loss"] + pen, rel=1e-5)
    assert penalised(rows)

    from cifarlab.train import RunStopped
    with pytest.raises(RunStopped):  # its time spent at once: stops after epoch 1, resumable
        train(cfg, tmp_path / "cut", progress=False, log=lambda *a: None, stop_at=0)
    train(None, tmp_path / "cut", resume=True, progress=False, log=lambda *a: None)
    assert [[r[k] for k in VALUES] for r in read_metrics(tmp_path / "cut")] == [[r[k] for k in VALUES] for r in rows]

    plain = apply_overrides(cfg, ["l2=0"])
    train(plain, tmp_path / "plain", progress=False, log=lambda *a: None)
    rows0 = read_metrics(tmp_path / "plain")
    assert [r["val_loss_l2"] for r in rows0] == [r["val_loss"] for r in rows0]
    assert not penalised(rows0)

    # an older record (no val_loss_l2 column) of a run with l2 still draws, its penalty unrecorded
    old = [{k: v for k, v in r.items() if k != "val_loss_l2"} for r in rows]
    assert not penalised(old) and not penalised([{**r, "val_loss_l2": math.nan} for r in old])
    curves(old, tmp_path / "old.png", l2=cfg.l2)
    assert (tmp_path / "old.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("extra,where", [
    (["l2=10"], "the training loss became non-finite at epoch 2, step "),
    (["batchnorm=true"], "the validation loss of epoch 2 is non-finite"),
])
def test_a_run_that_diverges_stops_in_one_line_and_keeps_its_last_good_checkpoint(tmp_path, extra, where):
    """A learning rate that jumps from 0.01 to 100 after the first epoch (real data): the losses become
    non-finite in epoch 2. The run stops there, exit status 2 with one line naming the epoch, and its
    record and checkpoint stay those of epoch 1 (no NaN weights written, no summary)."""
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "vgg1", "widths=[8]", "dense=16",
                        "subset=600", "val_split=100", "epochs=3", "schedule=piecewise", "boundaries=[9]",
                        "values=[0.01,100]", *extra, "--out", str(run)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and where in errors[0] and "its checkpoint after epoch 1 is kept" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
    import torch
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    weights = [t for t in state["model"].values() if t.is_floating_point()]
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in weights)
    assert len(read_metrics(run)) == 1 and not (run / "summary.json").exists()
