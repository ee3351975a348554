"""Ctrl-C, told apart from the errors it can turn into.

Python delivers Ctrl-C as a KeyboardInterrupt raised wherever the process happens to
be. Inside a C extension's import (matplotlib's Agg backend, loaded for the first
curves.png) the extension reports it as its own failure, `ImportError: initialization
failed`, and the interruption would read as a crashed run. The handler installed here
records that SIGINT arrived before raising KeyboardInterrupt, so the code that catches
an error can ask `seen()` and treat it as the interruption it was.

`cifarlab` installs it around every command (cli.main); a study's worker processes
call `note()` from their own handler (study/runner.py).
"""
from __future__ import annotations

import signal
import threading

_seen = False


def note() -> None:
    """Record that SIGINT reached this process."""
    global _seen
    _seen = True


def seen() -> bool:
    """Whether SIGINT has reached this process since it started (or since `reset()`)."""
    return _seen


def reset() -> None:
    global _seen
    _seen = False


def handler(signum, frame) -> None:
    note()
    raise KeyboardInterrupt


def install():
    """Use `handler` for SIGINT; returns the previous handler (None off the main thread,
    where signal handlers cannot be set and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, handler)


def restore(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
