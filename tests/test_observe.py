"""Watching runs: the progress line by time."""
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarlab.progress import Progress
from cifarlab.train import COLUMNS, read_metrics

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

