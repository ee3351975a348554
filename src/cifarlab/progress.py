"""A progress bar that is safe everywhere: a live bar on a terminal, a few plain lines in a file.

    bar = Progress(781, desc="epoch 1")
    for step in range(781):
        ...
        bar.update(1, loss=0.93)
    bar.close()

On a terminal it redraws one line with carriage returns at most ten times a second.
When stderr is a file or a pipe (a log, CI, `nohup`), carriage returns would pile up
into one enormous line, so it prints a line at every 25% instead.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, desc: str = "", unit: str = "it", enabled: bool = True,
                 stream=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.n, self.t0, self.last_draw, self.next_mark = 0, time.perf_counter(), 0.0, 0.25
        self.info: dict = {}

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        self.info.update(info)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self.last_draw >= 0.1 or (self.total and self.n >= self.total):
                self.last_draw = now
                self.stream.write("\r" + self._line(now) + "\x1b[K")
                self.stream.flush()
        elif self.total and self.n >= self.next_mark * self.total:
            while self.next_mark * self.total <= self.n:
                self.next_mark += 0.25
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        dt = max(now - self.t0, 1e-9)
        rate = self.n / dt
        if self.total:
            frac = min(self.n / self.total, 1.0)
            width = 24
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            eta = (self.total - self.n) / rate if rate > 0 else 0
            head = f"{self.desc} [{bar}] {self.n}/{self.total} {frac:4.0%}"
            tail = f"{_fmt_rate(rate, self.unit)} eta {eta:4.0f}s"
        else:
            head, tail = f"{self.desc} {self.n} {self.unit}", _fmt_rate(rate, self.unit)
        extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.info.items())
        return f"{head} {tail} {extra}".rstrip()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[K")  # the epoch's table row replaces the bar
            self.stream.flush()


def _fmt_rate(rate: float, unit: str) -> str:
    if unit == "B":
        return f"{rate / 1e6:.1f} MB/s"
    return f"{rate:.1f} {unit}/s"
