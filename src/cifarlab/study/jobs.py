"""One job of a study: a (preset, seed) pair, its config, its run folder's state, and
`run_job`, which runs it to the end in the calling process (a worker process, a Ray task).

    from cifarlab.study.jobs import Job, run_job
    run_job(Job("vgg3", 0, run_dir="studies/x/runs/vgg3/seed0", overrides=("epochs=2",)))
"""
from __future__ import annotations

import dataclasses
import math
import shlex
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .. import interrupt
from ..config import (ConfigError, differences, from_dict, load_preset, preset_names, read_yaml, resolve_config,
                      study_order, to_dict, validate)
from ..data import CLASSES
from ..errors import CifarlabError
from ..runfolder import (LOCK, ConfigMismatchError, RunBusyError, RunFolderError, describe, read_json,
                         read_summary)


# --quick: every preset, small and short (its time on 2 CPU cores: the README). A
# class-balanced 5,000-image subset (4,500 train, 500 held out for the per-epoch curves,
# so validation reads a twentieth of the test set's images), each preset's epochs
# scaled by 1/50 (100 -> 2, 400 -> 8), two seeds so the statistics have something to test.
QUICK_OVERRIDES = ["subset=5000", "val_split=500"]
QUICK_EPOCHS_SCALE = 0.02
QUICK_SEEDS = 2
TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000
# Settings that must agree between invocations on one study folder (the rest, such
# as --only, --seeds and --workers, may change: they add or schedule runs).
SETTINGS = ("overrides", "epochs_scale", "quick")


class StudyError(CifarlabError, ValueError):
    """A bad study command or a study folder made with other settings."""


class DamagedStudyError(StudyError):
    """A study.json that cannot be read as a study's record."""


STUDY_FILE = "study.json"


def read_study(study_dir, fix: str | None = None) -> dict | None:
    """STUDY_DIR/study.json (its settings and invocations), None where there is none; a file that
    is no study record (not JSON, empty, truncated, not UTF-8, a list, no settings, ...) is one
    line naming it, worded as damaged, ending with `fix` (default: how to go on with the study)."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        return None
    q = shlex.quote(str(study_dir))
    fix = fix or (f"restore it from a copy (or the repository that keeps the study's records), or move it away: "
                  f"`cifarlab study --out {q} ...` then starts a new one, keeping every finished run")
    meta = read_json(path, {"settings": dict, "invocations": list}, fix, DamagedStudyError)
    for i, inv in enumerate(meta["invocations"]):
        if not isinstance(inv, dict):
            raise DamagedStudyError(f"{path} is damaged (invocation {i} is {inv!r}); {fix}")
    return meta


@dataclass(frozen=True)
class Job:
    """One run: a preset at one seed with the study's overrides, into run_dir."""
    preset: str
    seed: int
    overrides: tuple = ()  # key=value strings, applied after the preset
    run_dir: str = ""
    epochs_scale: float = 1.0
    data_path: str | None = None
    threads: int = 0  # CPU threads for this run, unless its config sets them (0: all cores)
    command: tuple = ()  # the study command that planned it (words), kept in the run's summary.json
    stop_at: float | None = None  # time.time() after which the run stops at its epoch's end (--stop-after)
    start_by: float | None = None  # time.time() after which the job does not begin (stop_at for queued jobs)

    @property
    def label(self) -> str:
        return f"{self.preset}/seed{self.seed}"


def preset_seeds(text: str | None, option: str = "--only") -> dict[str, int | None]:
    """"vgg1,vgg3:3,combined" -> {"vgg1": None, "vgg3": 3, "combined": None}: the presets in the order
    written, and the seed count of those that name their own (a preset named twice keeps the larger)."""
    out: dict[str, int | None] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        name, sep, n = (x.strip() for x in item.partition(":"))
        if not name or (sep and (not n.isdigit() or int(n) < 1)):
            raise StudyError(f"{option} {item!r}: write PRESET or PRESET:SEEDS with SEEDS a positive whole "
                             f"number (vgg3:3 is vgg3's seeds 0, 1 and 2)")
        if name not in out or (sep and int(n) > (out[name] or 0)):
            out[name] = int(n) if sep else out.get(name)
    return out


def parse_only(text: str | None) -> tuple[list[str] | None, dict[str, int]]:
    """`--only vgg1,vgg3:3` -> (["vgg1", "vgg3"], {"vgg3": 3}): the presets (None: every preset) and the
    seed count of those that name their own; the others take --seeds."""
    given = preset_seeds(text)
    return (list(given) or None), {k: v for k, v in given.items() if v is not None}


def ordered_presets(names=None) -> list[str]:
    known = preset_names()
    if names:
        bad = [n for n in names if n not in known]
        if bad:
            raise StudyError(f"unknown preset{'s' if len(bad) > 1 else ''} {', '.join(bad)}; "
                             f"choose from: {', '.join(known)}")
        pool = names
    else:
        pool = known
    return study_order(pool)


def scale_overrides(cfg, scale: float) -> list[str]:
    """key=value overrides that shorten (or lengthen) a preset by `scale`, keeping its shape.

    Epoch-denominated lengths (warm-up, cosine period, piecewise boundaries in epochs)
    scale with the run; boundaries given in optimiser steps stay where the source put them.
    """
    if scale == 1.0:
        return []
    out = [f"epochs={max(1, round(cfg.epochs * scale))}"]
    if cfg.warmup_epochs:
        out.append(f"warmup_epochs={cfg.warmup_epochs * scale!r}")
    if cfg.decay_epochs:
        out.append(f"decay_epochs={cfg.decay_epochs * scale!r}")
    if cfg.schedule == "piecewise" and cfg.boundary_unit == "epochs":
        out.append(f"boundaries={[b * scale for b in cfg.boundaries]}")
    return out


def job_config(job: Job):
    """The resolved config of a job: preset, epoch scale, overrides, seed.

    config.resolve_config marks a run whose epochs or subset differ from its preset as
    not comparable to the references.
    """
    if "seed" in {o.partition("=")[0].strip() for o in job.overrides}:
        raise StudyError("seed= is set per run by the study; use --seeds N")
    scale = scale_overrides(load_preset(job.preset), job.epochs_scale)
    cfg = resolve_config(job.preset, None, scale + list(job.overrides))
    cfg.seed = job.seed
    return validate(cfg)


def images_per_epoch(cfg) -> tuple[int, int]:
    """(training images stepped through per epoch, validation images evaluated per epoch)."""
    n = cfg.subset - cfg.subset % len(CLASSES) if cfg.subset else TRAIN_IMAGES  # an equal share per class
    n -= cfg.val_split
    steps = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    return min(n, steps * cfg.batch_size), cfg.val_split or TEST_IMAGES


def epochs_done(run_dir) -> int:
    """Epochs recorded in a run folder's metrics.csv (0 without one)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return 0
    return max(0, len([line for line in path.read_text().splitlines() if line.strip()]) - 1)


def remaining_images(job: Job) -> int:
    """Training images a job still has to step through: what orders the longest runs first."""
    if run_status(job.run_dir) == "finished":
        return 0
    cfg = job_config(job)
    return max(0, cfg.epochs - epochs_done(job.run_dir)) * images_per_epoch(cfg)[0]


def longest_first(jobs: list[Job]) -> list[Job]:
    """The jobs with the most training left first (ties keep their order): on several workers the
    long runs then start at once instead of running alone at the end, so the study ends sooner."""
    return sorted(jobs, key=remaining_images, reverse=True)


def run_status(run_dir) -> str:
    """finished (summary.json), partial (checkpoint.pt), or new."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "checkpoint.pt").is_file():
        return "partial"
    return "new"


def config_mismatch(job: Job) -> str | None:
    """How a run folder's config.yaml differs from the job's config, or None when it agrees (or is absent)."""
    path = Path(job.run_dir) / "config.yaml"
    if not path.is_file():
        return None
    want = job_config(job)
    try:
        have = from_dict(read_yaml(path))
    except ConfigError as e:
        return f"its config.yaml cannot be read ({e})"
    diff = differences(have, want)
    if not diff:
        return None
    return (f"{job.label} was trained with other settings than this study's: "
            f"{describe(diff, to_dict(have), to_dict(want), 'its config.yaml', 'this study')}; "
            f"it is left as it is (move it away to train it again)")


def busy_reason(run_dir: Path) -> str:
    """Why a run is busy: the process that holds its folder's lock (the pid it wrote there), and what to do."""
    lock = Path(run_dir) / LOCK
    try:
        pid = lock.read_text().strip()
    except (OSError, UnicodeDecodeError):  # gone or unreadable since: the holder is not known
        pid = ""
    who = f"process {pid}" if pid.isdigit() else "another process"
    return (f"held by {who} through its lock {lock} (another study, or `cifarlab train` on this folder, is "
            f"training it); left as it is: run the study again once that process has ended")


def _log_interrupted(run_dir: Path) -> None:
    with open(run_dir / "train.log", "a") as logf:
        print("interrupted; the run resumes from its last checkpoint", file=logf)


def run_job(job: Job) -> dict:
    """Run one job to the end in this process; never recompute a finished run.

    Returns {"job", "status": skipped|trained|resumed|busy|mismatch|failed|stopped|deferred|damaged,
    "seconds", "test_acc", "error"}. A run folder whose config.yaml differs from the job's
    config is not touched (mismatch). Past `job.stop_at` a run stops at the end of its epoch,
    resumable (stopped; past `job.start_by` a job does not begin). A run begun in bf16
    that this machine would continue in fp32 is left for another machine (deferred). The
    run's own output goes to run_dir/train.log.
    """
    from ..train import ArithmeticMismatch, RunStopped, train  # torch: the report imports this module without it
    run_dir = Path(job.run_dir)
    out = {"job": dataclasses.asdict(job), "status": "skipped", "seconds": 0.0, "test_acc": None, "error": None}
    mismatch = config_mismatch(job)
    if mismatch:
        out["status"], out["error"] = "mismatch", mismatch
        return out
    if run_status(run_dir) == "finished":
        try:
            out["test_acc"] = read_summary(run_dir)["test_acc"]
        except RunFolderError as e:  # one damaged run folder: reported, the others go on
            out["status"], out["error"] = "damaged", str(e)
        return out
    if job.start_by is not None and time.time() >= job.start_by:
        out["status"] = "stopped"  # the study's time was spent before its turn came: left as it is
        return out
    run_dir.mkdir(parents=True, exist_ok=True)
    t0, started = time.perf_counter(), time.time()
    try:
        with open(run_dir / "train.log", "a") as logf:
            def log(*a):
                print(*a, file=logf, flush=True)
            cmd = list(job.command) or None
            out["status"] = "resumed" if run_status(run_dir) == "partial" else "trained"
            # resume=True: a checkpoint (or a config.yaml from a start cut short) continues,
            # after train() has checked, under the run's lock, that it is this job's run.
            # threads: the job's share of the cores, not in the config, so a resumed run follows it too
            s = train(job_config(job), run_dir, data_path=job.data_path, resume=True, log=log, progress=False,
                      command=cmd, threads=job.threads or None, stop_at=job.stop_at)
        out["test_acc"] = s["test_acc"]
        if (run_dir / "summary.json").stat().st_mtime < int(started):  # another process finished it meanwhile
            out["status"] = "skipped"
    except RunBusyError:  # another process (an older study still running?) has it
        out["status"], out["error"] = "busy", busy_reason(run_dir)
    except ConfigMismatchError as e:  # changed between the check above and the lock
        out["status"], out["error"] = "mismatch", str(e)
    except RunStopped as e:
        out["status"], out["epoch"] = "stopped", e.epoch
    except ArithmeticMismatch as e:
        out["status"], out["error"] = "deferred", str(e)
        with open(run_dir / "train.log", "a") as logf:
            print(f"not continued: {e}", file=logf)
    except KeyboardInterrupt:
        _log_interrupted(run_dir)
        raise
    except Exception as e:  # one failed run must not stop the others; the study reports it
        if interrupt.seen():  # Ctrl-C, turned into another error where it landed (interrupt.py)
            _log_interrupted(run_dir)
            raise KeyboardInterrupt from e
        out["status"], out["error"] = "failed", f"{type(e).__name__}: {e}"
        with open(run_dir / "train.log", "a") as logf:
            traceback.print_exc(file=logf)
    finally:
        out["seconds"] = time.perf_counter() - t0
    return out
