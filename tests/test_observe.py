"""Watching runs: the progress line by time, and TensorBoard event files that agree with metrics.csv."""
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarlab.progress import Progress
from cifarlab.runfolder import read_metrics
from cifarlab.train import COLUMNS

TINY = ["--preset", "vgg3", "subset=500", "val_split=100", "threads=1", "eval_batch_size=500"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def drive(bar, clock, steps, seconds_per_step, **info):
    for _ in range(steps):
        clock.t += seconds_per_step
        bar.update(1, **info)


def test_piped_lines_at_each_quarter_when_steps_are_fast():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, desc="epoch 1/3", unit="step", stream=out, clock=clock)
    drive(bar, clock, 100, 0.1)
    lines = out.getvalue().splitlines()
    assert [ln.split()[3] for ln in lines] == ["25/100", "50/100", "75/100", "100/100"]
    assert "\r" not in out.getvalue()


def test_piped_line_at_least_every_minute_when_steps_are_slow():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, desc="epoch 1/1", unit="step", stream=out, clock=clock)
    drive(bar, clock, 100, 4.0)  # 400 s an epoch: a quarter every 100 s, a minute every 15 steps
    steps = [int(ln.split()[3].split("/")[0]) for ln in out.getvalue().splitlines()]
    assert steps == [15, 25, 40, 50, 65, 75, 90, 100]


def test_terminal_redraws_about_once_a_second_and_reads_the_loss_only_then():
    clock, out = Clock(), Terminal()
    reads = []

    def loss():
        reads.append(clock.t)
        return 0.5

    bar = Progress(20, desc="epoch 1/1", unit="step", stream=out, clock=clock)
    drive(bar, clock, 20, 0.25, loss=loss)
    draws = out.getvalue().split("\r")[1:]
    assert len(draws) == 5 == bar.lines and len(reads) == 5  # at 1, 2, 3, 4 s and the last step
    assert all(d.endswith("\x1b[K") and "loss 0.5" in d for d in draws)
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_eta_for_the_epoch_and_the_run():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, desc="epoch 2/4", unit="step", stream=out, clock=clock, epochs_after=2, epoch_seconds=120)
    drive(bar, clock, 50, 1.0, loss=1.25)
    assert out.getvalue().splitlines()[-1] == (
        "epoch 2/4 [############------------] 50/100  50% 1.0 step/s eta 50s (run 4m50s) loss 1.25")
    # before any whole epoch, later epochs are counted at this one's pace (100 s each)
    bar = Progress(100, desc="epoch 1/3", unit="step", stream=out, clock=clock, epochs_after=2)
    drive(bar, clock, 25, 1.0)
    assert out.getvalue().splitlines()[-1].endswith("eta 1m15s (run 4m35s)")


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cifarlab", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run folder's event files, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}, acc


def raw_events(run_dir: Path) -> list:
    """Every event of every file, as written (no loader's de-duplication)."""
    from cifarlab.tensorboard import records
    return [ev for f in sorted(run_dir.glob("events.out.tfevents.*")) for _, _, ev in records(f)]


@pytest.mark.slow
def test_tensorboard_events_match_metrics_after_kill_and_resume(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    # checkpoints every 3 epochs: killed in epoch 5 or 6, the event files hold epochs the checkpoint has not
    p = cli(*TINY, "epochs=6", "checkpoint_every=3", "--out", str(out), "--quiet")
    deadline = time.time() + 300
    while sum(v.tag == "epoch/epoch" for ev in raw_events(out) for v in ev.summary.value) < 4:
        assert p.poll() is None and time.time() < deadline, p.communicate()[0]
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert not (out / "summary.json").exists() and len(read_metrics(out)) == 3
    before = sorted(v.simple_value for ev in raw_events(out) for v in ev.summary.value if v.tag == "epoch/epoch")
    assert before[:4] == [1, 2, 3, 4]  # more on disk than the checkpoint holds

    r = cli("--resume", str(out), "--quiet")
    log, _ = r.communicate(timeout=600)
    assert r.returncode == 0, log
    assert "resuming" in log and "after epoch 3" in log
    assert not [d for d in out.iterdir() if d.is_dir()]  # the run's events are in its own folder

    # as written: no (tag, step) twice, whatever loader reads them
    seen = [(v.tag, ev.step) for ev in raw_events(out) for v in ev.summary.value]
    assert len(seen) == len(set(seen))

    rows = read_metrics(out)
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps_per_epoch"]
    sc, acc = scalars(out)
    for col in COLUMNS:
        got = sc[f"epoch/{col}"]
        assert [s for s, _ in got] == [r["epoch"] * steps for r in rows]
        assert [v for _, v in got] == pytest.approx([r[col] for r in rows], rel=1e-5), col
    # step-level points: every 10 steps and each epoch's last; the last one of an epoch is its train loss
    step_loss = dict(sc["step/train_loss"])
    assert sorted(step_loss) == sorted({s for s in range(1, 6 * steps + 1) if s % 10 == 0 or s % steps == 0})
    for r in rows:
        assert step_loss[r["epoch"] * steps] == pytest.approx(r["train_loss"], rel=1e-5)
    assert dict(sc["step/lr"])[steps] == pytest.approx(rows[0]["lr"])
    assert sc["test/acc"] == [(6 * steps, pytest.approx(summary["test_acc"], rel=1e-6))]

    # the config as hyperparameters, one session
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    starts = [v for ev in raw_events(out) for v in ev.summary.value if v.tag == "_hparams_/session_start_info"]
    assert len(starts) == 1
    hp = HParamsPluginData.FromString(starts[0].metadata.plugin_data.content).session_start_info.hparams
    assert hp["lr"].number_value == 0.001 and hp["subset"].number_value == 500
    assert hp["preset"].string_value == "vgg3" and hp["widths"].string_value == "[32, 64, 128]"
    assert hp["batchnorm"].string_value == "false"
    exp = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} == {"test/acc", "test/loss"}


@pytest.mark.slow
def test_without_tensorboard_one_line_and_progress_in_a_pipe(tmp_path):
    """tensorboard made unimportable: the run is unchanged, one line says so; the log is piped to a file."""
    out, log = tmp_path / "run", tmp_path / "train.log"
    code = "import sys; sys.modules['tensorboard'] = None; from cifarlab.cli import main; sys.exit(main(sys.argv[1:]))"
    with open(log, "w") as f:
        p = subprocess.run([sys.executable, "-c", code, "train", *TINY, "epochs=2", "--out", str(out)],
                           stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert p.returncode == 0, text
    assert text.count("tensorboard not installed") == 1
    assert not list(out.glob("events.out.tfevents.*")) and (out / "summary.json").is_file()
    assert "\r" not in text
    bars = [ln for ln in text.splitlines() if ln.startswith("epoch 1/2 [")]
    assert len(bars) == 4 and bars[-1].split()[3] == "7/7"  # 400 images, batch 64: a line per quarter
    assert all(" eta " in ln and "(run " in ln and " loss " in ln for ln in bars)
    assert all("(run " not in ln for ln in text.splitlines() if ln.startswith("epoch 2/2 ["))


@pytest.mark.slow
def test_tensorboard_names_a_studys_runs_by_folder(small_study):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    mux = EventMultiplexer().AddRunsFromDirectory(str(small_study["dir"]))
    mux.Reload()
    names = {f"runs/{p}/seed{s}" for p in ("vgg3", "dropout", "bn_only") for s in (0, 1)}
    assert set(mux.Runs()) == names
    for name in names:  # the study was killed and resumed: each run's epochs once, as in its metrics.csv
        rows = read_metrics(small_study["dir"] / name)
        got = mux.Scalars(name, "epoch/val_acc")
        assert [e.value for e in got] == pytest.approx([r["val_acc"] for r in rows], rel=1e-5)
        seen = [(v.tag, ev.step) for ev in raw_events(small_study["dir"] / name) for v in ev.summary.value]
        assert len(seen) == len(set(seen))
