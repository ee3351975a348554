"""Run the study: every (preset, seed) pair into one study folder, resumable, in parallel.

    cifarlab study                                  # all presets, 1 seed, full length
    cifarlab study --only vgg3,dropout --seeds 3 --workers 2
    cifarlab study --quick                          # every preset, small and short: a pipeline check
    cifarlab study --epochs-scale 0.1 subset=20000  # scaled runs are marked not comparable
    cifarlab study --backend ray --address HOST:6379   # each run a Ray task (ray_backend.py)

    from cifarlab.study.runner import plan, run_job, run_study, BACKENDS, StudyOptions
    jobs = plan(["vgg3"], seeds=2, overrides=["epochs=2"], study_dir="studies/x")
    results = BACKENDS["local"](jobs, workers=2)
    results = run_study(["vgg3"], "studies/x", StudyOptions(seeds=2, overrides=["epochs=2"], workers=2))

Layout: STUDY_DIR/study.json (settings and every invocation), and one ordinary run
folder per job, STUDY_DIR/runs/<preset>/seed<k>/ (see train.py). A run folder with
summary.json is finished and skipped; one with checkpoint.pt resumes; a run folder
in use by another process (an flock on its .lock) is left alone.

Execution is a plain function `run_job(job)` (jobs.py: importable and picklable, so
any backend can call it: worker processes here, Ray tasks elsewhere) and a backend, a
function `(jobs, workers, on_result) -> results` registered in BACKENDS.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
import multiprocessing as mp

from .. import interrupt
from ..files import atomic_write_text
from ..runfolder import command_words
from . import ray_backend
from .jobs import (SETTINGS, Job, StudyError, job_config, longest_first, ordered_presets, read_study, run_job,
                   run_status)


# --- backends --------------------------------------------------------------------------

def _watch_parent(parent: int) -> None:
    """Worker initialiser: die with the study process (killed with -9, say), so no
    orphan keeps training; its run resumes from the last checkpoint next time."""
    if sys.platform.startswith("linux"):  # the kernel sends SIGKILL the moment the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch():  # elsewhere (and as a fallback): poll
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C: the backend stopped every run (each resumable) and took no further job."""

    def __init__(self, results: list[dict]):
        super().__init__()
        self.results = results  # the jobs that ended, interrupted ones included


# In a worker process: Ctrl-C (SIGINT to the terminal's process group) interrupts the
# job in progress once and makes the worker refuse any job it is handed afterwards.
_stopping = False
_running = False


def _worker_init(parent: int) -> None:
    _watch_parent(parent)
    signal.signal(signal.SIGINT, _worker_sigint)


def _worker_sigint(signum, frame) -> None:
    global _stopping
    first = not _stopping
    _stopping = True
    interrupt.note()  # an error this raises inside an import is still the interruption (interrupt.py)
    if first and _running:
        raise KeyboardInterrupt


def _interrupted(job: Job) -> dict:
    return {"job": dataclasses.asdict(job), "status": "interrupted", "seconds": 0.0, "test_acc": None,
            "error": None}


def _run_in_worker(job: Job) -> dict:
    global _running
    if _stopping:
        return _interrupted(job)
    _running = True
    try:
        return run_job(job)
    except KeyboardInterrupt:
        return _interrupted(job)
    finally:
        _running = False


def _stop_workers(pool: ProcessPoolExecutor, futures: dict, grace: float = 60.0) -> None:
    """Cancel the queued jobs, interrupt the running ones and wait for them to stop (killed after `grace` s)."""
    for f in futures:
        f.cancel()
    procs = list(getattr(pool, "_processes", {}).values())
    try:
        for proc in procs:  # a worker the terminal's Ctrl-C missed (a signal to this process alone)
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        wait([f for f in futures if not f.cancelled()], timeout=grace)
    except KeyboardInterrupt:  # Ctrl-C again: no more waiting
        pass
    for proc in procs:
        if proc.is_alive():
            proc.kill()  # its run resumes from its last checkpoint


def run_local(jobs: list[Job], workers: int = 1, on_result=None) -> list[dict]:
    """Run jobs in `workers` spawned processes (each imports torch once, then takes jobs).

    Ctrl-C stops them all: the runs in progress end where they are (each resumes from its
    last checkpoint), no queued job starts, and StudyInterrupted is raised."""
    on_result = on_result or (lambda r: None)
    results = []
    ctx = mp.get_context("spawn")  # no forked torch state; same behaviour on every OS
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(os.getpid(),))
    futures, taken = {}, set()
    try:
        futures = {pool.submit(_run_in_worker, j): j for j in jobs}
        for f in as_completed(futures):
            taken.add(f)
            results.append(_result(f, futures[f]))
            on_result(results[-1])
    except KeyboardInterrupt:
        _stop_workers(pool, futures)
        results += [_result(f, futures[f]) for f in futures
                    if f not in taken and f.done() and not f.cancelled()]
        raise StudyInterrupted(results) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _result(f, job: Job) -> dict:
    try:
        return f.result()
    except BaseException as e:  # the worker process itself died (or was interrupted between jobs)
        if isinstance(e, KeyboardInterrupt):
            return _interrupted(job)
        return {"job": dataclasses.asdict(job), "status": "failed", "seconds": 0.0,
                "test_acc": None, "error": f"worker died: {type(e).__name__}: {e}"}


def run_inline(jobs: list[Job], workers: int = 1, on_result=None) -> list[dict]:
    """Run jobs one after another in this process (debugging, profilers)."""
    results = []
    for j in jobs:
        results.append(run_job(j))
        (on_result or (lambda r: None))(results[-1])
    return results


def run_ray(jobs: list[Job], workers: int = 1, on_result=None, **options) -> list[dict]:
    """Each job a Ray task, on a local instance or a cluster (ray_backend.py; Ray is imported only here)."""
    return ray_backend.run_ray(jobs, workers, on_result, **options)


BACKENDS = {"local": run_local, "inline": run_inline, "ray": run_ray}
BACKEND_OPTIONS = {"ray": ("address", "gpus_per_run")}  # command-line options only that backend takes


# --- the study folder ------------------------------------------------------------------

def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def plan(presets: list[str], seeds: int, overrides: list[str], study_dir, epochs_scale: float = 1.0,
         data_path=None, workers: int = 1, seed_start: int = 0, command=None,
         seeds_for: dict | None = None, stop_at: float | None = None) -> list[Job]:
    """The study's jobs, in the presets' order: `seeds` seeds each, or seeds_for[preset] where given;
    `command` (the study's command line, a string or words) goes into each run's summary.json, none
    when None; `stop_at` (a time.time()) stops every run at the end of its epoch once it has passed."""
    study_dir = Path(study_dir)
    threads = threads_per_worker(workers)
    words = tuple(command_words(command) or ())
    counts = {p: (seeds_for or {}).get(p, seeds) for p in presets}
    jobs = [Job(p, s, tuple(overrides), str(study_dir / "runs" / p / f"seed{s}"), epochs_scale,
                str(data_path) if data_path else None, threads, words, stop_at)
            for p in presets for s in range(seed_start, seed_start + counts[p])]
    for j in jobs:  # bad overrides fail here, before any process starts
        job_config(j)
    return jobs


def seeds_text(names: list[str], seeds: int, seeds_for: dict | None = None) -> str:
    """"3 seeds", or "1 seeds; vgg3 3" when some presets take their own number."""
    own = {p: n for p, n in (seeds_for or {}).items() if p in names and n != seeds}
    return f"{seeds} seeds" + "".join(f"; {p} {n}" for p, n in own.items())


STUDY_LOCK = ".study.lock"  # held while study.json is read, checked and rewritten


@contextlib.contextmanager
def _study_lock(study_dir):
    """An exclusive flock on STUDY_DIR/.study.lock: one invocation at a time reads and rewrites study.json."""
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(study_dir) / STUDY_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_study(study_dir, settings: dict, options: dict, command=None) -> dict:
    """Create or reopen study.json and record this invocation (`command`: its command line, a
    string or words; None records none); refuse a folder made with other settings.

    The check and the write happen under the study's lock, so of two invocations with
    other settings started at once, the second is refused."""
    path = Path(study_dir) / "study.json"
    with _study_lock(study_dir):
        meta = read_study(study_dir)
        if meta is not None:
            old = {k: meta["settings"].get(k) for k in SETTINGS}
            if old != {k: settings[k] for k in SETTINGS}:
                raise StudyError(f"{study_dir} was made with {old}, not {settings}; "
                                 f"pass another --out or the same settings")
        else:
            meta = {"settings": settings, "invocations": []}
        meta["invocations"].append({"id": uuid.uuid4().hex[:12], "command": command_words(command),
                                    "options": options,
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None})
        atomic_write_text(path, json.dumps(meta, indent=2))
    return meta


STATUSES = ("trained", "resumed", "skipped", "busy", "mismatch", "failed", "damaged", "interrupted", "stopped",
            "deferred")
PROBLEMS = ("failed", "busy", "mismatch", "damaged")  # statuses the study exits non-zero for


def close_study(study_dir, meta: dict, results: list[dict], wall: float, interrupted: bool = False) -> None:
    """Record this invocation's end in study.json, re-read under the lock: other invocations' records stay."""
    mine = meta["invocations"][-1]
    mine["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    mine["wall_seconds"] = round(wall, 1)
    mine["counts"] = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    if interrupted:
        mine["interrupted"] = True
    if mine["counts"]["stopped"]:
        mine["stopped"] = True  # --stop-after: its time was spent, every run stopped resumable
    path = Path(study_dir) / "study.json"
    with _study_lock(study_dir):
        try:
            current = read_study(study_dir) or meta
        except StudyError:  # damaged since this invocation opened it: what this invocation knows is kept
            current = meta
        for i, inv in enumerate(current["invocations"]):
            if inv.get("id") == mine["id"]:
                current["invocations"][i] = mine
                break
        else:
            current["invocations"].append(mine)
        atomic_write_text(path, json.dumps(current, indent=2))


ORDERS = ("auto", "study", "longest")


def execution_order(jobs: list[Job], order: str, workers: int) -> list[Job]:
    """The order runs are handed to the workers: the study's (`study`), or the most training left
    first (`longest`); `auto` is longest on several workers (the study ends sooner) and the study's
    order on one (the same end, and the baselines' results come first)."""
    if order not in ORDERS:
        raise StudyError(f"unknown order {order!r}; choose one of: {', '.join(ORDERS)}")
    return longest_first(jobs) if order == "longest" or (order == "auto" and workers > 1) else list(jobs)


@dataclass
class StudyOptions:
    """How a study runs, beside which presets and the folder it runs them into (run_study's arguments).

    seeds_for: {preset: seeds} for the presets that take another number than `seeds`.
    overrides, epochs_scale, quick: the study's settings, recorded in study.json (a folder keeps its own).
    command: the study's command line, recorded in study.json and each run's summary.json.
    stop_after: seconds after which every run in progress stops at the end of its epoch (checkpoint
    written) and no further run starts; those runs' status is `stopped`."""
    seeds: int = 1
    seeds_for: dict | None = None
    overrides: Sequence[str] = ()
    epochs_scale: float = 1.0
    quick: bool = False
    workers: int = 1
    backend: str = "local"
    backend_options: dict | None = None  # the backend's own options (BACKEND_OPTIONS)
    data_path: object = None
    order: str = "auto"  # ORDERS
    stop_after: float | None = None
    command: list[str] | str | None = None
    log: Callable = print


def run_study(presets=None, study_dir="studies/full", opts: StudyOptions | None = None) -> list[dict]:
    """Run the study: `presets` (default: all, in the study's order), each run into STUDY_DIR/runs;
    returns one result per run (run_job's)."""
    o = opts or StudyOptions()
    seeds, seeds_for, workers, epochs_scale, backend = o.seeds, o.seeds_for, o.workers, o.epochs_scale, o.backend
    data_path, command, stop_after, log = o.data_path, o.command, o.stop_after, o.log
    if backend not in BACKENDS:
        raise StudyError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if workers < 1 or seeds < 1 or epochs_scale <= 0 or min((seeds_for or {}).values(), default=1) < 1:
        raise StudyError("--workers and --seeds must be at least 1, --epochs-scale above 0")
    if stop_after is not None and not stop_after > 0:
        raise StudyError("--stop-after must be a duration above 0 (2h30m, 45m, 90s)")
    stop_at = time.time() + stop_after if stop_after is not None else None
    overrides = list(o.overrides)
    names = ordered_presets(presets)
    jobs = plan(names, seeds, overrides, study_dir, epochs_scale, data_path, workers, command=command,
                seeds_for=seeds_for, stop_at=stop_at)
    settings = {"overrides": overrides, "epochs_scale": epochs_scale, "quick": o.quick}
    options = {"presets": names, "seeds": seeds, "workers": workers, "backend": backend,
               "data": str(data_path) if data_path else None}
    if seeds_for:
        options["seeds_for"] = dict(seeds_for)
    if stop_after is not None:
        options["stop_after_seconds"] = stop_after
    pending = [j for j in jobs if run_status(j.run_dir) != "finished"]
    todo = execution_order(pending, o.order, workers)
    if stop_at is not None:  # the first run of each worker begins whatever the time; a queued one only in time
        todo = [dataclasses.replace(j, start_by=None if i < workers else stop_at) for i, j in enumerate(todo)]
    meta = open_study(study_dir, settings, options, command)
    first = "longest runs first" if [j.label for j in todo] != [j.label for j in pending] else "in study order"
    log(f"study {study_dir}: {len(jobs)} runs ({len(names)} presets x {seeds_text(names, seeds, seeds_for)}), "
        f"{len(jobs) - len(todo)} finished, {len(todo)} to run on {workers} worker(s) "
        f"x {jobs[0].threads} thread(s), backend {backend}, {first}")
    t0 = time.perf_counter()
    done = [0]

    def report(r):
        done[0] += 1
        j = r["job"]
        acc = f"test_acc {r['test_acc']:.4f}" if r["test_acc"] is not None else (r["error"] or "")
        if r["status"] == "stopped":
            acc = f"after epoch {r['epoch']}, resumable" if r.get("epoch") else "before it began"
        log(f"[{done[0]}/{len(todo)}] {j['preset']}/seed{j['seed']}: {r['status']} {acc} "
            f"({r['seconds']:.0f}s, study {time.perf_counter() - t0:.0f}s)")

    results = [run_job(j) for j in jobs if run_status(j.run_dir) == "finished"]
    try:
        results += BACKENDS[backend](todo, workers, report, **(o.backend_options or {})) if todo else []
        if any(r["status"] == "interrupted" for r in results):
            raise StudyInterrupted([])  # a Ctrl-C the workers saw and this process did not (between its checks)
    except KeyboardInterrupt as e:
        results += getattr(e, "results", [])
        close_study(study_dir, meta, results, time.perf_counter() - t0, interrupted=True)
        raise
    wall = time.perf_counter() - t0
    close_study(study_dir, meta, results, wall)
    failed = [r for r in results if r["status"] in PROBLEMS]
    log(f"study done in {wall:.0f}s: " + ", ".join(f"{k} {v}" for k, v in
                                                   meta["invocations"][-1]["counts"].items() if v))
    for r in failed + [r for r in results if r["status"] == "deferred"]:
        log(f"  {r['job']['preset']}/seed{r['job']['seed']}: {r['status']} {r['error'] or ''}")
    return results
