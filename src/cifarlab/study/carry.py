"""Carry a study from machine to machine: its records, and the state of its unfinished runs.

    cifarlab carry out /work/study/protocol-bf16 results/protocol-bf16   # before the machine goes
    cifarlab carry in results/protocol-bf16 /work/study/protocol-bf16    # on the next machine
    cifarlab study --out /work/study/protocol-bf16 ...                    # resumes every carried run

A records folder (results/<study>/ in a repository) holds each finished run's records
(config.yaml, metrics.csv, summary.json, curves.png, train.log) and, for a run that has
not finished, the same files so far and its latest checkpoint.pt. `carry out` copies a
study folder's runs there; a run finished since the last carry loses its checkpoint, its
records replace it. `carry in` copies them into a study folder (new or not), where the
study resumes each carried run from its checkpoint exactly as if it had never stopped.
Both merge study.json: the invocations of either side are kept, so the records tell
every machine's share. Neither ever replaces a finished run with an unfinished one, nor
a run with an earlier state of itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint, runfolder
from ..files import atomic_write, atomic_write_text
from .jobs import SETTINGS, StudyError, epochs_done, read_study

RUN_RECORDS = ("config.yaml", "metrics.csv", "summary.json", "curves.png", "train.log")
STATE = "checkpoint.pt"


@dataclass
class Carried:
    """What happened to one run: `action` is carried, finished, skipped; `note` says why when skipped."""
    label: str  # preset/seedK
    action: str
    epoch: int = 0
    epochs: int = 0
    bytes: int = 0  # of the checkpoint carried (0 for a finished run)
    commit: str | None = None  # the commit the run started with
    note: str = ""

    def line(self, verb: str) -> str:
        if self.action == "skipped":
            return f"{self.label}: left as it is ({self.note})"
        if self.action == "finished":
            return f"{self.label}: finished, records {verb}"
        started = f", begun with commit {self.commit[:7]}" if self.commit else ""
        return (f"{self.label}: unfinished, epoch {self.epoch} of {self.epochs}, checkpoint "
                f"{self.bytes / 1e6:.1f} MB {verb}{started}")


def _runs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("runs/*/seed*") if p.is_dir())


def _label(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


def _state(run: Path) -> str:
    if (run / "summary.json").is_file():
        return "finished"
    if (run / STATE).is_file():
        return "partial"
    return "new"


def _read_study(folder: Path, what: str) -> dict | None:
    return read_study(folder, f"restore it from a copy, or {what}")


def merge_studies(ours: dict | None, theirs: dict, ours_name, theirs_name) -> dict:
    """`theirs` with `ours`'s invocations added (by id), in the order they started; refused when the
    two were made with other settings (their runs would not be one study's)."""
    if ours is None:
        return theirs
    a = {k: ours["settings"].get(k) for k in SETTINGS}
    b = {k: theirs["settings"].get(k) for k in SETTINGS}
    if a != b:
        raise StudyError(f"{ours_name} was made with {a} and {theirs_name} with {b}: not one study; "
                         f"carry into another folder")
    seen = {inv.get("id") for inv in theirs["invocations"]}
    invocations = theirs["invocations"] + [inv for inv in ours["invocations"] if inv.get("id") not in seen]
    invocations.sort(key=lambda inv: inv.get("started") or "")
    return {**theirs, "invocations": invocations}


def _copy(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, lambda out: out.write(data))


def _checkpoint_facts(run: Path) -> tuple[int, int, str | None]:
    """(epochs done, epochs, commit it began with) of an unfinished run's checkpoint, which must load and
    agree with its metrics.csv."""
    state = checkpoint.read(run / STATE)  # CheckpointError (one line) on a damaged or foreign file
    done, epochs = state.get("epoch"), (state.get("config") or {}).get("epochs")
    if not isinstance(done, int) or not isinstance(epochs, int):
        raise StudyError(f"{run / STATE} holds no epoch count; it is not a run's checkpoint")
    rows = epochs_done(run)
    if (run / "metrics.csv").is_file() and rows != done:
        raise StudyError(f"{run}: checkpoint.pt is at epoch {done} but metrics.csv has {rows} rows; "
                         f"the folder mixes two states of the run (copy it whole from one place)")
    segments = state.get("segments") or [{}]
    commit = (segments[0].get("code") or {}).get("commit")
    return done, epochs, commit


def _carry_run(src: Path, dst: Path, records: bool) -> Carried:
    """Copy one run folder's records (and state, if unfinished) from src to dst, under dst's run lock
    (`records`: dst is a records folder, which keeps no lock file behind)."""
    label, have, want = _label(src), _state(dst), _state(src)
    if want == "new":
        return Carried(label, "skipped", note="no epoch finished yet, nothing to carry")
    if want == "partial":
        done, epochs, commit = _checkpoint_facts(src)
        if have == "finished":
            return Carried(label, "skipped", done, epochs,
                           note=f"{dst} has it finished; the unfinished state at epoch {done} is not carried")
        if have == "partial":
            there = checkpoint.read(dst / STATE).get("epoch", 0)
            if there >= done:
                return Carried(label, "skipped", done, epochs,
                               note=f"{dst} is at epoch {there} already, not behind epoch {done}")
    lock = runfolder.acquire(dst)  # RunBusyError when a study or a train has that run now
    try:
        for name in RUN_RECORDS:
            if (src / name).is_file():
                _copy(src / name, dst / name)
        if want == "finished":
            (dst / STATE).unlink(missing_ok=True)  # the records replace the state
            return Carried(label, "finished")
        _copy(src / STATE, dst / STATE)
        (dst / "summary.json").unlink(missing_ok=True)  # (none: a finished dst was never overwritten)
        return Carried(label, "carried", done, epochs, (dst / STATE).stat().st_size, commit)
    finally:
        if records:
            (dst / runfolder.LOCK).unlink(missing_ok=True)
        runfolder.release(lock)


def carry(src, dst, direction: str, log=print) -> list[Carried]:
    """Copy a study's runs from `src` to `dst` (direction `out`: study folder -> records; `in`: records ->
    study folder) with study.json merged; returns what happened to each run."""
    src, dst = Path(src), Path(dst)
    verb = "carried out" if direction == "out" else "carried in"
    what = ("name a study folder (the --out of `cifarlab study`)" if direction == "out"
            else "name a records folder that `cifarlab carry out` wrote")
    if not src.is_dir():
        raise StudyError(f"{src}: no such folder; {what}")
    if src.resolve() == dst.resolve():
        raise StudyError(f"{src} and {dst} are one folder; carry into another")
    theirs = _read_study(src, what)
    if theirs is None:
        raise StudyError(f"{src} has no study.json, so it holds no study; {what}")
    if dst.exists() and not dst.is_dir():
        raise StudyError(f"{dst} is a file, not a folder; name a folder")
    meta = merge_studies(_read_study(dst, "move it away or carry into another folder"), theirs, dst, src)
    for run in _runs(src):  # every check that can refuse, before anything is written
        if _state(run) == "partial":
            _checkpoint_facts(run)
    dst.mkdir(parents=True, exist_ok=True)
    from .runner import _study_lock
    with _study_lock(dst):
        atomic_write_text(dst / "study.json", json.dumps(meta, indent=2))
    done = []
    for run in _runs(src):
        c = _carry_run(run, dst / run.relative_to(src), records=direction == "out")
        done.append(c)
        log(c.line(verb))
    if direction == "out":  # a run the records hold unfinished but the study no longer has: say so
        gone = [_label(r) for r in _runs(dst) if _state(r) == "partial" and not (src / r.relative_to(dst)).is_dir()]
        for label in gone:
            log(f"{label}: unfinished in {dst} and not in {src}; its carried state stays")
    return done


def commit_message(done: list[Carried], dst) -> str:
    """One line for the commit that carries the runs: each unfinished run with its epoch."""
    runs = [f"{c.label} at epoch {c.epoch} of {c.epochs}" for c in done if c.action == "carried"]
    fin = [c.label for c in done if c.action == "finished"]
    parts = []
    if runs:
        parts.append("carried " + ", ".join(runs))
    if fin:
        parts.append(f"{len(fin)} finished")
    return f"{Path(dst).name}: " + ("; ".join(parts) if parts else "records, nothing unfinished")
