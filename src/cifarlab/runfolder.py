"""A run folder's guard: one process trains it at a time, and a finished run is not replaced.

    lock = acquire(run_dir)        # an flock on RUN_DIR/.lock, or RunBusyError
    ...
    release(lock)

The lock file is the one `cifarlab study` takes for each of its runs, so a study and a
`cifarlab train` never train one folder at once. A folder holds a run once it has
config.yaml, checkpoint.pt or summary.json; `cifarlab train --out` refuses such a
folder unless told to resume it (--resume) or to start it over (--force).

A run folder's files carry the format they are written in: checkpoint.pt and
summary.json hold `format_version` (FORMAT_VERSION). A file of a newer format than this
cifarlab reads is refused in one line; one without the key (written before it existed)
is version 0 and read as before.
"""
from __future__ import annotations

import csv
import fcntl
import json
import os
import shlex
from pathlib import Path

from .errors import CifarlabError

FORMAT_VERSION = 1  # of checkpoint.pt and summary.json; 0: files written before they recorded one
LOCK = ".lock"
RUN_FILES = ("config.yaml", "checkpoint.pt", "summary.json")  # any of them: the folder holds a run
# What a run (and `cifarlab evaluate`) writes; --force deletes these before starting over.
OUTPUT_FILES = RUN_FILES + ("metrics.csv", "curves.png", "evaluation.json", "evaluation_tta.json",
                            "confusion.png", "confusion_tta.png")


class RunFolderError(CifarlabError):
    """A run folder that cannot be used as asked: it holds a run, or none to resume."""


class RunBusyError(RunFolderError):
    """Another process holds the run folder's lock."""


class ConfigMismatchError(RunFolderError):
    """A run folder trained with other settings than the ones given."""


def check_format(record: dict, path, error: type[CifarlabError] = RunFolderError) -> None:
    """Refuse `record` (read from `path`) when it was written in a newer format than this code reads."""
    version = record.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise error(f"{path}: format_version {version!r} is not a format version; the file is damaged or not "
                    f"cifarlab's")
    if version > FORMAT_VERSION:
        raise error(f"{path}: written in format version {version}, newer than this cifarlab reads "
                    f"(up to {FORMAT_VERSION}); use the cifarlab version that wrote it, or a newer one")


class DamagedFileError(RunFolderError):
    """A run's or a study's record (summary.json, study.json) that cannot be read as one."""


def read_json(path, required: dict, fix: str, error: type[CifarlabError] = DamagedFileError) -> dict:
    """The JSON object in `path`, its format checked (check_format) and each key of `required`
    ({key: a type or a tuple of types}) present with such a value; anything else (unreadable,
    not UTF-8, not JSON, truncated, not an object, a key missing) is one line naming the file,
    worded as damaged, ending with `fix`."""
    path = Path(path)

    def damaged(what: str):
        return error(f"{path} is damaged ({what}); {fix}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise damaged("not UTF-8 text") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    if not text.strip():
        raise damaged("empty")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise damaged(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise damaged("nested too deeply to be its JSON") from None
    if not isinstance(record, dict):
        raise damaged(f"a JSON {type(record).__name__}, not an object")
    check_format(record, path, error)
    for key, kind in required.items():
        if key not in record:
            raise damaged(f"no {key!r}")
        if not isinstance(record[key], kind) or (isinstance(record[key], bool) and kind is not bool):
            raise damaged(f"{key!r} is {record[key]!r}")
    return record


def summary_fix(run_dir) -> str:
    """How to get a damaged summary.json written again: the run's checkpoint writes it anew."""
    q = shlex.quote(str(run_dir))
    return (f"move it away and run `cifarlab train --resume {q}`, which writes it again from the run's "
            f"checkpoint.pt")


def read_summary(run_dir) -> dict:
    """A finished run's summary.json: DamagedFileError (one line naming it, saying how to write it
    again) when it is no summary, a RunFolderError when its format is newer than this code's."""
    path = Path(run_dir) / "summary.json"
    summary = read_json(path, {"test_acc": (int, float, type(None))}, summary_fix(run_dir))
    acc = summary["test_acc"]
    if acc is not None and not 0 <= acc <= 1:
        raise DamagedFileError(f"{path} is damaged (test_acc {acc!r} is no accuracy); {summary_fix(run_dir)}")
    return summary


def command_words(command) -> list[str] | None:
    """The command that started a run, as a list of words for its records: a command line
    given as one string is split as a shell would; None (no command given) stays None."""
    if command is None:
        return None
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def run_files(run_dir) -> list[str]:
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).is_file()]


def refuse_existing(run_dir) -> None:
    """Refuse to train a new run into a folder that already holds one."""
    found = run_files(run_dir)
    if found:
        state = "a finished run" if "summary.json" in found else "a run"
        q = shlex.quote(str(run_dir))
        raise RunFolderError(f"{run_dir} already holds {state} ({', '.join(found)}); continue it with "
                             f"`cifarlab train --resume {q}`, start it over with --force (deletes it), "
                             f"or choose another --out")


def missing_folders(run_dir) -> list[Path]:
    """The folders, outermost first, that creating `run_dir` would make."""
    out = []
    p = Path(run_dir).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out[::-1]


def acquire(run_dir):
    """Create `run_dir` if needed and hold an exclusive flock on its .lock; returns the open lock file."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK, "a+")
    except OSError as e:
        raise RunFolderError(f"cannot use {run_dir} as a run folder: {e.strerror or e}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip()
        f.close()
        who = f"process {pid}" if pid.isdigit() else "another process"
        raise RunBusyError(f"{run_dir} is being trained by {who} (it holds {run_dir / LOCK}); wait for it "
                           f"to end, or train into another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def release(lock) -> None:
    if lock is not None and not lock.closed:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def discard(run_dir, made: list[Path], lock) -> None:
    """Undo the folders a run created when it failed before writing its first file."""
    run_dir = Path(run_dir)
    if not made or (run_dir / "config.yaml").exists():
        return
    (run_dir / LOCK).unlink(missing_ok=True)
    release(lock)
    for folder in reversed(made):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def clear(run_dir) -> None:
    """Delete a run's files (--force) so that nothing of the old run mixes with the new one."""
    for name in OUTPUT_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)


def describe(diff: list[str], a: dict, b: dict, a_name: str, b_name: str, limit: int = 6) -> str:
    """'lr is 0.02 in A, 0.01 in B; epochs ...' for the keys in `diff`."""
    parts = [f"{k} is {a[k]!r} in {a_name}, {b[k]!r} in {b_name}" for k in diff[:limit]]
    if len(diff) > limit:
        parts.append(f"and {len(diff) - limit} more ({', '.join(diff[limit:])})")
    return "; ".join(parts)


def read_metrics(run_dir) -> list[dict]:
    """metrics.csv of a run folder, a dict per epoch (epoch an int, the rest floats)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
