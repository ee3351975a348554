"""TensorBoard event files in each run folder, when the `tensorboard` extra is installed.

    pip install 'cifarlab[tensorboard]'
    cifarlab study --quick --out studies/quick
    tensorboard --logdir studies/quick          # runs named runs/<preset>/seed<k>

Every run writes, beside metrics.csv, `events.out.tfevents.*` files into its own folder:

- per epoch, every column of metrics.csv as `epoch/<column>` (train and validation loss
  and accuracy, learning rate, seconds, images per second, the epoch number);
- every LOG_EVERY optimiser steps (and at each epoch's last), `step/train_loss` (the
  running mean of the epoch so far) and `step/lr`;
- the config as hyperparameters (the hparams plugin, in the run's folder itself) and,
  at the end, `test/acc` and `test/loss`, the metrics the hparams table shows.

The x axis of every scalar is the optimiser step: an epoch's row sits at the step that
ends it. Events are flushed before each checkpoint; on resume, events after the
checkpoint's step (written by the interrupted process) are cut from the old files, so
the resumed run continues the same curves without a step twice. Without tensorboard
nothing is written and one line says so (once per process); CIFARLAB_TENSORBOARD=0
turns the files off.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

LOG_EVERY = 10  # optimiser steps between step-level points
PATTERN = "events.out.tfevents.*"
SESSION_TAG = "_hparams_/session_start_info"
_warned = False


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def hparams_of(cfg: dict) -> dict:
    """The config as hparams values: numbers and strings as they are, booleans and lists as text."""
    out = {}
    for k, v in cfg.items():
        if k in ("description", "reference", "name"):
            continue
        # bool first: the hparams API would store True as the number 1
        out[k] = str(v).lower() if isinstance(v, bool) else v if isinstance(v, (int, float, str)) else json.dumps(v)
    out["preset"] = cfg.get("name", "")
    return out


class Null:
    """What a run gets without tensorboard (or on ranks other than 0): nothing happens."""

    def step(self, *a, **k) -> None: ...
    def epoch(self, *a, **k) -> None: ...
    def finish(self, *a, **k) -> None: ...
    def close(self) -> None: ...


class RunWriter:
    def __init__(self, run_dir: Path, config: dict, start_step: int):
        from torch.utils.tensorboard import SummaryWriter
        run_dir = Path(run_dir)
        if start_step == 0:  # a fresh start: events of an earlier attempt go
            for f in run_dir.glob(PATTERN):
                f.unlink()
        else:
            cut_after(run_dir, start_step)
        # the hparams session once per run: at its start, or on the first resume that has tensorboard
        has_session = any(v.tag == SESSION_TAG for f in sorted(run_dir.glob(PATTERN))
                          for _, _, ev in records(f) for v in ev.summary.value)
        self.w = SummaryWriter(log_dir=str(run_dir), flush_secs=30)
        if not has_session:
            from torch.utils.tensorboard.summary import hparams
            exp, ssi, _ = hparams(hparams_of(config), {"test/acc": None, "test/loss": None})
            # at the step it resumes from: an earlier step would read as a restart and purge the curves
            self.w.file_writer.add_summary(exp, start_step)
            self.w.file_writer.add_summary(ssi, start_step)
        self.w.flush()

    def step(self, step: int, loss, lr: float, last: bool = False) -> None:
        """After optimiser step `step` (1-based over the run); `loss` may be a callable."""
        if step % LOG_EVERY and not last:
            return
        self.w.add_scalar("step/train_loss", loss() if callable(loss) else loss, step)
        self.w.add_scalar("step/lr", lr, step)

    def epoch(self, row: dict, step: int) -> None:
        """metrics.csv's row of an epoch, at the step that ended it; flushed (a checkpoint may follow)."""
        for k, v in row.items():
            self.w.add_scalar(f"epoch/{k}", v, step)
        self.w.flush()

    def finish(self, summary: dict, step: int) -> None:
        from torch.utils.tensorboard.summary import hparams
        for k in ("acc", "loss"):
            if summary.get(f"test_{k}") is not None:
                self.w.add_scalar(f"test/{k}", summary[f"test_{k}"], step)
        if summary.get("val_acc_final") is not None:
            self.w.add_scalar("test/val_acc_final", summary["val_acc_final"], step)
        _, _, end = hparams({}, {})  # the session's end, status success
        self.w.file_writer.add_summary(end, step)
        self.w.flush()

    def close(self) -> None:
        self.w.close()


def open_run(run_dir, config: dict, start_step: int, enabled: bool = True, log=print):
    """A RunWriter for the run folder, or Null when there is no tensorboard (said once per process)."""
    global _warned
    if not enabled or os.environ.get("CIFARLAB_TENSORBOARD", "1") == "0":
        return Null()
    if not available():
        if not _warned:
            log("tensorboard not installed: no event files (pip install 'cifarlab[tensorboard]')")
            _warned = True
        return Null()
    return RunWriter(Path(run_dir), config, start_step)


def records(path: Path):
    """(offset_end, event) of each whole record of an event file (TFRecord framing:
    length u64, its CRC, the serialized Event, its CRC); a torn last record ends it."""
    from tensorboard.compat.proto.event_pb2 import Event
    data = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        end = pos + 12 + n + 4
        if end > len(data):
            return
        try:
            ev = Event.FromString(data[pos + 12:pos + 12 + n])
        except Exception:  # a record cut by a kill: the rest is not readable
            return
        yield pos, end, ev
        pos = end


def cut_after(run_dir: Path, last_step: int) -> None:
    """Drop from the run's event files every event after `last_step` (and any torn record)."""
    for f in sorted(Path(run_dir).glob(PATTERN)):
        data = f.read_bytes()
        keep = b"".join(data[a:b] for a, b, ev in records(f) if ev.step <= last_step)
        if keep != data:
            tmp = f.with_name(f".cut-{f.name}")  # not an events.out.* name: never read as events
            tmp.write_bytes(keep)
            os.replace(tmp, f)
