"""A progress bar that is safe everywhere: a live bar on a terminal, a few plain lines in a file.

    bar = Progress(781, desc="epoch 1/100", unit="step", epochs_after=99)
    for step in range(781):
        ...
        bar.update(1, loss=lambda: loss_sum.item() / seen)   # read only when drawn
    bar.close()

It updates by time, not by step count, so a slow epoch still shows movement. On a
terminal it redraws one line with carriage returns about once a second. When the
stream is a file or a pipe (a log, CI, `nohup`), carriage returns would pile up into
one enormous line, so it prints a line at every quarter of the total or after a
minute without one, whichever comes first. Values given as callables (a running loss
that needs a device sync, say) are evaluated only when a line is drawn.

With `epochs_after` (epochs left after this one), the line shows two ETAs: the epoch's
and the run's; the run's counts each later epoch at `epoch_seconds` (the last whole
epoch's time, evaluation included) or, before one has finished, at this epoch's pace.
"""
from __future__ import annotations

import sys
import time

TTY_INTERVAL = 1.0  # seconds between redraws on a terminal
PIPE_INTERVAL = 60.0  # at most this long without a line in a file or pipe
PIPE_MARKS = 4  # and a line at every quarter


class Progress:
    def __init__(self, total: int | None, desc: str = "", unit: str = "it", enabled: bool = True,
                 stream=None, epochs_after: int | None = None, epoch_seconds: float | None = None,
                 clock=time.monotonic):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.epochs_after, self.epoch_seconds = epochs_after, epoch_seconds
        self.clock = clock
        self.n, self.t0 = 0, clock()
        self.last_draw = self.t0
        self.next_mark = 1
        self.info: dict = {}
        self.lines = 0  # lines (or redraws) written

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        self.info.update(info)
        if not self.enabled:
            return
        now = self.clock()
        done = bool(self.total) and self.n >= self.total
        if self.tty:
            if now - self.last_draw >= TTY_INTERVAL or done:
                self._draw(now, "\r", "\x1b[K")
            return
        mark = bool(self.total) and self.n * PIPE_MARKS >= self.next_mark * self.total
        if mark or now - self.last_draw >= PIPE_INTERVAL:
            if self.total:
                while self.next_mark * self.total <= self.n * PIPE_MARKS:
                    self.next_mark += 1
            self._draw(now, "", "\n")

    def _draw(self, now: float, head: str, tail: str) -> None:
        self.last_draw = now
        self.lines += 1
        self.stream.write(head + self.line(now) + tail)
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        dt = max(now - self.t0, 1e-9)
        rate = self.n / dt
        if self.total:
            frac = min(self.n / self.total, 1.0)
            width = 24
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            head = f"{self.desc} [{bar}] {self.n}/{self.total} {frac:4.0%}"
            tail = _fmt_rate(rate, self.unit)
            if rate > 0:
                left = (self.total - self.n) / rate
                tail += f" eta {_fmt_time(left)}"
                if self.epochs_after:
                    each = self.epoch_seconds if self.epoch_seconds else self.total / rate
                    tail += f" (run {_fmt_time(left + self.epochs_after * each)})"
        else:
            head, tail = f"{self.desc} {self.n} {self.unit}", _fmt_rate(rate, self.unit)
        values = {k: (v() if callable(v) else v) for k, v in self.info.items()}
        extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        return f"{head} {tail} {extra}".rstrip()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[K")  # the epoch's table row replaces the bar
            self.stream.flush()


def _fmt_rate(rate: float, unit: str) -> str:
    if unit == "B":
        return f"{rate / 1e6:.1f} MB/s"
    return f"{rate:.1f} {unit}/s"


def _fmt_time(s: float) -> str:
    """Seconds as 42s, 3m05s or 2h07m."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
