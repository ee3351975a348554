"""Train one run into a folder that explains itself, and resume it after any interruption.

    from cifarlab.config import load_preset
    from cifarlab.train import train
    summary = train(load_preset("vgg3"), "runs/vgg3")
    summary = train(None, "runs/vgg3", resume=True)   # continue from the last checkpoint

The run folder holds config.yaml (resolved), metrics.csv (a row per epoch),
curves.png, checkpoint.pt (written atomically every `checkpoint_every` epochs, and at a
stop) and, once finished, summary.json. Randomness is drawn from generators seeded by
(seed, epoch), so a run resumed at an epoch boundary continues exactly as if it had never
stopped. This module is the run's lifecycle (folder, resume, checkpoint, record, summary);
the compute it drives (device and precision, data, model, step, evaluation) is engine.py's.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import platform
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from . import __version__, checkpoint, distributed, runfolder, runtime, tensorboard
from .augment import alternating_flip_mask
from .config import Config, ConfigError, differences, from_dict, from_saved, read_yaml, to_dict
from .data import CLASSES
from .engine import (Data, Totals, arithmetic_name, build_training, device_name, evaluate, grad_scaler, make_batch,
                     pick_device, prepare_data, setup_threads, threads_of, train_step, use_arithmetic)
from .errors import CifarlabError
from .files import WriteError, sweep
from .models import Model, count_parameters
from .optim import Lookahead, build_schedule, l2_penalty
from .progress import Progress

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds",
           "images_per_second", "wall_seconds", "val_loss_l2"]
# train_loss is the loss trained on, with any L2 penalty (`l2`), as Keras reports `loss`; val_loss
# is the validation cross-entropy alone; val_loss_l2 adds the penalty of the weights at the epoch's
# end, as Keras reports `val_loss` (equal to val_loss without `l2`). Records written before
# val_loss_l2 have no such column; a row of such a record carried on by a resume gets nan there
# when the run has `l2` (its penalty at the time was not kept) and its val_loss when it has none.


class ArithmeticMismatch(CifarlabError):
    """A run begun in one arithmetic (bf16) that this machine would continue in another (fp32)."""


class Diverged(CifarlabError):
    """The training loss became non-finite: the run stops where it is, its last checkpoint kept."""


# How often (in steps) an epoch checks that its training loss is still finite: a host sync of one
# number, so a diverged run stops within this many steps instead of training on NaNs to the epoch's end.
FINITE_CHECK_STEPS = 50


class RunStopped(Exception):
    """A run stopped at the end of an epoch because its time (`stop_at`) was spent; its checkpoint is written."""

    def __init__(self, run_dir, epoch: int, epochs: int):
        super().__init__(f"{run_dir}: stopped after epoch {epoch} of {epochs} (its time was spent)")
        self.epoch, self.epochs = epoch, epochs


def _versions() -> dict:
    return {"cifarlab": __version__, "torch": str(torch.__version__), "numpy": np.__version__,
            "python": platform.python_version()}


def code_version() -> dict:
    """The code a run trains with: the git commit of the tree cifarlab is imported from
    and whether that tree was clean (no tracked file changed, nothing untracked in the
    package), so that any result can be re-run. Outside a git checkout (an installed
    wheel) the commit is None and the package version says what it was."""
    pkg = Path(__file__).resolve().parent
    out = {"commit": None, "clean": None, "version": __version__}

    def git(*args):
        return subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True, timeout=30)
    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or not (Path(top.stdout.strip()) / "src" / "cifarlab").resolve() == pkg:
            return out  # not cifarlab's own checkout (or git is missing)
        out["commit"] = git("rev-parse", "HEAD").stdout.strip() or None
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
        untracked = git("status", "--porcelain", "--untracked-files=all", "--", "src").stdout.splitlines()
        out["clean"] = not changed and not untracked
        if not out["clean"]:
            out["changed"] = sorted({line[3:] for line in changed + untracked})
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        r = {"val_loss_l2": math.nan, **r}  # a row of an older version's record (see COLUMNS)
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    checkpoint.atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def _header(log) -> None:
    log(f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'val_loss':>8} {'val_acc':>7} "
        f"{'lr':>9} {'seconds':>7} {'img/s':>7}")


def _row(r: dict) -> str:
    return (f"{r['epoch']:>5d} {r['train_loss']:>10.4f} {r['train_acc']:>9.4f} {r['val_loss']:>8.4f} "
            f"{r['val_acc']:>7.4f} {r['lr']:>9.3g} {r['epoch_seconds']:>7.1f} {r['images_per_second']:>7.0f}")


def train(cfg: Config | None, run_dir, data_path=None, resume: bool = False, log=print,
          progress: bool = True, command: list[str] | str | None = None, on_epoch=None, force: bool = False,
          threads: int | None = None, stop_at: float | None = None) -> dict:
    """Train (or resume) the run in `run_dir`; returns its summary. Under torchrun, see distributed.py.

    A folder that already holds a run (config.yaml, checkpoint.pt or summary.json) is
    refused unless `resume` (continue it; a config given must be the run's own) or
    `force` (delete it and start over). The folder's lock (RUN_DIR/.lock, an flock) is
    held throughout, so a second process training the same folder is refused. A run
    that fails before its first file is written leaves no folder behind.

    command: what started the run (the command line, as the caller has it), kept in
    summary.json; None records none. threads: CPU threads when the config sets none
    (`threads=0`), e.g. a study worker's share of the cores; None: this process's share.
    on_epoch(row, model, run_dir), if given, is called after each epoch's metrics row
    (and checkpoint, when one is due) on rank 0; it may raise to stop the run there.
    stop_at: a time.time() after which the run stops at the end of its current epoch, its
    checkpoint written, raising RunStopped (a later resume continues it exactly).
    """
    run_dir = Path(run_dir)
    if cfg is None and not resume:
        raise ValueError("train() needs a config unless it resumes a run folder")
    if resume and force:
        raise ValueError("train(): resume continues a run, force starts it over; not both")
    runtime.keep_freed_memory()  # a step re-allocates what the last one freed (runtime.py)
    opts = RunOptions(data_path, resume, force, log, progress, command, on_epoch, threads, stop_at)
    if not distributed.is_main_process():  # rank 0 alone writes (and locks) the folder
        return _train(cfg, run_dir, opts)
    if not resume and not force:
        runfolder.refuse_existing(run_dir)  # before anything is created
    made = runfolder.missing_folders(run_dir)
    lock = runfolder.acquire(run_dir)
    try:
        if not resume and not force:
            runfolder.refuse_existing(run_dir)  # again, under the lock: another process may have started it
        return _train(cfg, run_dir, opts)
    except BaseException:
        runfolder.discard(run_dir, made, lock)
        raise
    finally:
        runfolder.release(lock)


def _config_file(run_dir: Path) -> Config | None:
    """The run's config.yaml, if it has one."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return from_dict(read_yaml(path))
    except ConfigError as e:
        msg = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        raise ConfigError(msg) from None


def _same_config(given: Config, saved: Config, given_name: str, saved_name: str, what: str, fix: str) -> None:
    diff = differences(given, saved)
    if diff:
        raise runfolder.ConfigMismatchError(
            f"{what}: {runfolder.describe(diff, to_dict(given), to_dict(saved), given_name, saved_name)}. {fix}")


def _resume_state(cfg: Config | None, run_dir: Path):
    """(config, checkpoint state or None, summary if finished) of a run folder to resume.

    config.yaml must agree with the checkpoint (an edit would be trained over without
    effect), and a config given must agree with the run's."""
    on_disk = _config_file(run_dir)
    q = shlex.quote(str(run_dir))
    edited = (f"Restore config.yaml to the checkpoint's values to resume the run, or start a new run from the "
              f"edited file: `cifarlab train --config {q}/config.yaml --out NEW_FOLDER`")
    given = "Give the run's own settings, or train into another folder (or start this one over with --force)"
    other = f"{run_dir} holds a run with other settings"
    if (run_dir / "summary.json").is_file():
        if cfg is not None and on_disk is not None:
            _same_config(cfg, on_disk, "the config given", "its config.yaml", other, given)
        return cfg or on_disk, None, runfolder.read_summary(run_dir)
    state = None
    if (run_dir / "checkpoint.pt").is_file():
        state = checkpoint.read(run_dir / "checkpoint.pt", checkpoint.RESUME)
        saved = from_saved(state["config"], run_dir / "checkpoint.pt")
        if on_disk is not None:
            _same_config(on_disk, saved, "config.yaml", "the checkpoint",
                         f"{run_dir}/config.yaml was changed after the run started", edited)
        if cfg is not None:
            _same_config(cfg, saved, "the config given", "its checkpoint", other, given)
        cfg = saved
    elif on_disk is not None:
        if cfg is not None:
            _same_config(cfg, on_disk, "the config given", "its config.yaml", other, given)
        cfg = cfg or on_disk
    elif cfg is None:
        raise runfolder.RunFolderError(f"{run_dir} holds no run to resume (no checkpoint.pt, no config.yaml); "
                                       f"start one with `cifarlab train --out {q}`")
    return cfg, state, None


@dataclass
class RunOptions:
    """How one invocation trains a run (train()'s arguments beside the config and the folder)."""
    data_path: object = None
    resume: bool = False
    force: bool = False
    log: Callable = print
    progress: bool = True
    command: list[str] | str | None = None
    on_epoch: Callable | None = None
    threads: int | None = None
    stop_at: float | None = None


def _train(cfg: Config | None, run_dir: Path, opts: RunOptions) -> dict:
    """Restore or set up the run, train its remaining epochs one by one, finish it."""
    state = None
    if opts.resume:
        cfg, state, finished = _resume_state(cfg, run_dir)
        if finished is not None:
            opts.log(f"{run_dir} already finished; nothing to resume")
            return finished
    run = start_run(cfg, run_dir, state, opts)
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            row = run_epoch(run, epoch)
            end_epoch(run, row)
            if opts.on_epoch is not None and run.ddp.is_main:
                opts.on_epoch(row, run.model, run_dir)
            if opts.stop_at is not None and epoch + 1 < cfg.epochs and time.time() >= opts.stop_at:
                stop_run(run, epoch + 1)
        return finish_run(run, opts.command)
    except BaseException:
        # a run that stops (disk full, Ctrl-C, an error) leaves no event file open behind it:
        # the writer's thread would hold it, and the folder's file system, until the process ends
        with contextlib.suppress(Exception):
            run.tb.close()
        raise


def _silent(*args, **kwargs) -> None:
    pass


@dataclass
class Run:
    """A run in progress: its settings, data, network and optimiser state, and its record so far."""
    cfg: Config
    run_dir: Path
    ddp: distributed.Context
    device: torch.device
    amp: torch.dtype | None  # the autocast dtype, None for fp32
    data: Data
    model: Model
    fwd: torch.nn.Module  # the model's forward: compiled, or wrapped for DistributedDataParallel
    opt: torch.optim.Optimizer
    lr_at: Callable[[int], float]  # the learning rate at an optimiser step
    steps: int  # optimiser steps per epoch
    log: Callable
    progress: bool
    t_start: float  # perf_counter at data loading: the summary's total_seconds
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    lookahead: Lookahead | None = None
    tb: object = None  # tensorboard.RunWriter or Null
    history: list = field(default_factory=list)  # the metrics rows of the epochs done
    start_epoch: int = 0  # epochs done before this invocation
    wall: float = 0.0  # seconds over the epochs done, every invocation's
    segments: list = field(default_factory=list)  # each invocation that trained part of the run
    code: dict = field(default_factory=dict)  # code_version() of this invocation
    last_dt: float | None = None  # this process's last epoch, in seconds, for the ETA
    last_checkpoint: int = 0  # the epochs the run's latest checkpoint holds (0: none yet)

    @property
    def train_images(self) -> int:
        return len(self.data.y_train)


def steps_per_epoch(cfg: Config, n: int) -> int:
    steps = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    if steps < 1:
        raise ConfigError(f"{n} training images make no batch of {cfg.batch_size} with drop_last")
    return steps


def start_run(cfg: Config, run_dir: Path, state: dict | None, opts: RunOptions) -> Run:
    """Set up a run: device, data, network and optimiser, the folder's files, and with a
    checkpoint (`state`) everything restored to where it stopped."""
    ddp = distributed.setup(cfg.device)  # one process of a torchrun job, or the only one
    log, progress = (opts.log, opts.progress) if ddp.is_main else (_silent, False)  # rank 0 alone speaks
    threads_note = setup_threads(cfg, opts.threads, threads_of(state.get("segments", [])) if state else None)
    t_start = time.perf_counter()  # data loading to final evaluation (this process)
    device = ddp.device(pick_device(cfg.device))
    amp = use_arithmetic(cfg, device)
    if state is not None:
        check_arithmetic(run_dir, state.get("segments", []), state["epoch"], amp)
    torch.manual_seed(cfg.seed)
    data = prepare_data(cfg, device, opts.data_path)
    model, fwd, opt = build_training(cfg, device)
    if state is None:  # before DDP copies rank 0's weights to the others
        model.setup_from_data(data.x_train, data.mean, data.std)
    model, fwd = ddp.wrap(model, fwd, cfg, device)  # DistributedDataParallel under torchrun
    steps = steps_per_epoch(cfg, len(data.y_train))
    run = Run(cfg, run_dir, ddp, device, amp, data, model, fwd, opt, build_schedule(cfg, steps), steps, log,
              progress, t_start, scaler=grad_scaler(amp, device))
    ddp.check_batches(run.train_images, cfg)
    if cfg.lookahead_every:  # fast94: a Lookahead averager of the weights
        run.lookahead = Lookahead(model, cfg.lookahead_every, cfg.lookahead_decay)
    started_before = (run_dir / "config.yaml").is_file()
    if state is not None:  # weights that do not fit are refused before the folder is touched
        restore(run, state)
    if ddp.is_main:  # everything that can fail on the settings or the data has run: the run starts here
        _open_folder(run, opts.force)
    if state is not None:
        log(f"resuming {run_dir} after epoch {run.start_epoch} of {cfg.epochs}")
    elif opts.resume and started_before:
        log(f"no checkpoint in {run_dir}; starting it from the beginning")
    run.code = code_version()
    run.segments.append({"from_epoch": run.start_epoch, "code": run.code, "device": device_name(device),
                         "arithmetic": arithmetic_name(amp),
                         **({"threads": torch.get_num_threads()} if device.type == "cpu" else {})})
    if threads_note and device.type == "cpu":
        log(threads_note)
    _announce(run)
    run.tb = tensorboard.open_run(run_dir, to_dict(cfg), run.start_epoch * steps, enabled=ddp.is_main, log=log)
    return run


def check_arithmetic(run_dir: Path, segments: list[dict], epochs_done: int, amp) -> None:
    """Refuse to continue a run in another arithmetic than the one its last epochs computed in
    (a bf16 run resumed with amp=native where bf16 is not native would go on in fp32)."""
    marked = [g for g in segments if "arithmetic" in g]  # segments of older versions don't say
    worked = [g["arithmetic"] for g, nxt in zip(marked, [*marked[1:], None])
              if g["from_epoch"] < (nxt["from_epoch"] if nxt else epochs_done)]
    here = arithmetic_name(amp)
    if worked and worked[-1] != here:
        begun = worked[-1]
        need = ("a CPU with native bf16 (AVX512_BF16 or AMX) or a GPU" if begun == "bf16"
                else f"a machine where its amp setting computes {begun}")
        raise ArithmeticMismatch(
            f"{run_dir} trained its {epochs_done} epochs so far in {begun}; here it would continue in {here}, "
            f"so it is left as it is: continue it on {need}")


def segment_seconds(segments: list[dict], history: list[dict]) -> float:
    """Seconds every invocation spent on a run, its setup and evaluation included: the segments'
    own `seconds`; a segment of an older version without them counts its epochs' seconds."""
    total = 0.0
    for g, nxt in zip(segments, [*segments[1:], None]):
        if "seconds" in g:
            total += g["seconds"]
        else:
            last = nxt["from_epoch"] if nxt else len(history)
            total += sum(r["epoch_seconds"] for r in history[g["from_epoch"]:last])
    return total


def _note_segment_time(run: Run) -> None:
    """This invocation's seconds so far, in its segment (saved with every checkpoint and the summary)."""
    if run.segments:
        run.segments[-1]["seconds"] = round(time.perf_counter() - run.t_start, 1)


def stop_run(run: Run, epochs_done: int) -> None:
    """Stop after `epochs_done` epochs with everything written for a resume, and raise RunStopped."""
    if run.ddp.is_main and epochs_done % run.cfg.checkpoint_every != 0:  # end_epoch wrote none this epoch
        write_metrics(run.run_dir, run.history)
        save_checkpoint(run, epochs_done)
    run.log(f"stopped after epoch {epochs_done} of {run.cfg.epochs}: its time was spent; "
            f"the run resumes from this checkpoint")
    raise RunStopped(run.run_dir, epochs_done, run.cfg.epochs)


def _open_folder(run: Run, force: bool) -> None:
    """The run folder as the run starts: an old run's files gone (force), temporaries of
    writes cut short (kill -9 in a checkpoint write) swept, the resolved config.yaml written."""
    if force:
        runfolder.clear(run.run_dir)
    sweep(run.run_dir, ".*.tmp", "*.tmp.png")
    checkpoint.atomic_write_text(run.run_dir / "config.yaml", yaml.safe_dump(to_dict(run.cfg), sort_keys=False))


def restore(run: Run, state: dict) -> None:
    """Continue from a checkpoint: weights, optimiser, scaler, averager, record and every RNG
    (one that does not fit the run is a CheckpointError naming it)."""
    path = run.run_dir / "checkpoint.pt"
    checkpoint.load_weights(run.model, state["model"], path)
    checkpoint.load_part(run.opt, state, "optimizer", path)
    if run.scaler is not None and "scaler" in state:
        checkpoint.load_part(run.scaler, state, "scaler", path)
    if run.lookahead is not None:
        checkpoint.load_part(run.lookahead, state, "lookahead", path)
    run.history, run.start_epoch, run.wall = state["history"], state["epoch"], state["wall_seconds"]
    for r in run.history:  # rows of an older version: without l2 the penalised loss is the plain one
        r.setdefault("val_loss_l2", math.nan if run.cfg.l2 else r["val_loss"])
    run.segments = list(state.get("segments", []))
    run.last_checkpoint = run.start_epoch
    checkpoint.set_rng_state(state["rng"])


def _announce(run: Run) -> None:
    """The run's one-line description, the table's header and the rows of the epochs done."""
    cfg, ddp = run.cfg, run.ddp
    run.log(f"{cfg.name}: {count_parameters(run.model):,} parameters, {run.train_images} training images, "
            f"{run.steps} steps/epoch, device {device_name(run.device)}"
            + (f" x {ddp.world} processes" if ddp.active else ""))
    _header(run.log)
    for r in run.history:
        run.log(_row(r))


def save_checkpoint(run: Run, epochs_done: int) -> None:
    """checkpoint.pt: everything needed to continue after `epochs_done` epochs exactly as if never stopped."""
    extra = {}
    _note_segment_time(run)
    if run.scaler is not None:
        extra["scaler"] = run.scaler.state_dict()
    if run.lookahead is not None:
        extra["lookahead"] = run.lookahead.state_dict()
    checkpoint.save(run.run_dir / "checkpoint.pt", {
        "format_version": runfolder.FORMAT_VERSION,
        "config": to_dict(run.cfg), "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "epoch": epochs_done, "step": epochs_done * run.steps, "history": run.history,
        "wall_seconds": run.wall, "rng": checkpoint.rng_state(), "segments": run.segments,
        "norm": {"mean": run.data.mean.tolist(), "std": run.data.std.tolist()}, "versions": _versions(),
        **extra})
    run.last_checkpoint = epochs_done


def train_one_epoch(run: Run, epoch: int) -> tuple[Totals, float]:
    """Train the 0-based `epoch`: its loss and accuracy totals (this process's) and its last learning rate."""
    cfg, data, n = run.cfg, run.data, run.train_images
    # Everything random in this epoch follows from (seed, epoch): resume-exact.
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen).to(run.device)
    flips = alternating_flip_mask(n, epoch, cfg.seed).to(run.device) if cfg.alt_flip else None
    run.model.on_epoch_start(epoch)
    totals = Totals(run.device)
    bar = Progress(run.steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", enabled=run.progress,
                   epochs_after=cfg.epochs - epoch - 1, epoch_seconds=run.last_dt)
    for i in range(run.steps):
        step = epoch * run.steps + i
        lr = run.lr_at(step)
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        # this rank's slice of the batch (all of it when training alone)
        xb, yb = run.ddp.split_batch(*make_batch(data, idx, cfg, gen, None if flips is None else flips[idx]))
        total, out = train_step(run.model, run.fwd, run.opt, xb, yb, cfg, lr, run.amp, run.scaler)
        if run.lookahead is not None:
            run.lookahead.step(step, cfg.epochs * run.steps)
        totals.add(total, out, yb)
        if (i + 1) % FINITE_CHECK_STEPS == 0 or i == run.steps - 1:
            check_finite(run, epoch, totals, bar)
        bar.update(1, loss=totals.running_loss)
        run.tb.step(step + 1, totals.running_loss, lr, last=i == run.steps - 1)
    bar.close()
    return totals, lr


def check_finite(run: Run, epoch: int, totals: Totals, bar=None) -> None:
    """Stop the run (Diverged) once a step's training loss is not finite: nothing of this epoch is
    recorded or checkpointed, so the last checkpoint (the last good epoch's) stays as it was."""
    k = totals.diverged()
    if k is None:
        return
    if bar is not None:
        bar.close()
    step = epoch * run.steps + k + 1  # 1-based, of the run
    kept = (f"its checkpoint after epoch {run.last_checkpoint} is kept" if run.last_checkpoint
            else "no checkpoint was written before it")
    raise Diverged(f"{run.run_dir}: the training loss became non-finite at epoch {epoch + 1}, step {k + 1} of "
                   f"{run.steps} (step {step} of the run, lr {run.lr_at(step - 1):.3g}); the run stops there and "
                   f"{kept}. Train it again with a lower lr (--force starts this folder over)")


def evaluate_run(run: Run, x: torch.Tensor, y: torch.Tensor, tta: int = 0, confusion: bool = False) -> dict:
    """Loss and accuracy of the run's network on (x, y), over every process's share (and,
    with `confusion`, the confusion matrix)."""
    return run.ddp.evaluate_sharded(evaluate, run.model, x, y, run.data.mean, run.data.std,
                                    run.cfg.eval_batch_size, run.cfg.channels_last, run.amp, tta, confusion=confusion)


@torch.no_grad()
def validation_penalty(run: Run) -> float:
    """The L2 penalty (`l2`) of the weights as they are validated: what Keras adds to the
    validation cross-entropy in the `val_loss` it reports (0.0 without `l2`)."""
    penalty = l2_penalty(run.model, run.cfg.l2)
    return float(penalty.item() if torch.is_tensor(penalty) else penalty)


def run_epoch(run: Run, epoch: int) -> dict:
    """Train `epoch`, validate, and add its metrics row to the run's record (and the log)."""
    t0 = time.perf_counter()
    totals, lr = train_one_epoch(run, epoch)
    loss_sum, correct, seen = run.ddp.sum(totals.loss_sum, totals.correct, totals.seen)  # the global batch's
    train_seconds = time.perf_counter() - t0
    val = evaluate_run(run, run.data.x_val, run.data.y_val)
    if not math.isfinite(val["loss"]):  # finite training losses, but outputs that overflow on unseen images
        kept = (f"its checkpoint after epoch {run.last_checkpoint} is kept" if run.last_checkpoint
                else "no checkpoint was written before it")
        raise Diverged(f"{run.run_dir}: the validation loss of epoch {epoch + 1} is non-finite (the network's "
                       f"outputs overflow); the run stops there and {kept}. Train it again with a lower lr "
                       f"(--force starts this folder over)")
    penalty = validation_penalty(run)
    dt = run.last_dt = time.perf_counter() - t0
    run.wall += dt
    row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
           "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr, "epoch_seconds": dt,
           "images_per_second": seen / train_seconds, "wall_seconds": run.wall,
           "val_loss_l2": val["loss"] + penalty}
    run.history.append(row)
    run.log(_row(row))
    run.tb.epoch(row, (epoch + 1) * run.steps)  # flushed before the checkpoint end_epoch writes
    return row


def end_epoch(run: Run, row: dict) -> None:
    """After an epoch, when a checkpoint is due (rank 0): metrics.csv, checkpoint.pt, curves.png."""
    done, cfg = row["epoch"], run.cfg
    if not run.ddp.is_main or (done % cfg.checkpoint_every != 0 and done != cfg.epochs):
        return
    try:
        write_metrics(run.run_dir, run.history)
        save_checkpoint(run, done)
        _plot(run.run_dir, run.history, cfg)
    except WriteError as e:  # disk full, say: the last checkpoint written is still whole
        raise WriteError(e.errno, f"{e}; once that is fixed, continue the run with "
                                  f"`cifarlab train --resume {run.run_dir}`") from None


def finish_run(run: Run, command) -> dict:
    """The trained network's final scores, summary.json and the last log line; returns the summary."""
    cfg, ddp = run.cfg, run.ddp
    if run.lookahead is not None:
        run.lookahead.finish()  # the slow weights are the result: evaluated, and what the checkpoint keeps
        if ddp.is_main:
            save_checkpoint(run, cfg.epochs)  # a second finish() (resuming from here) changes nothing
    final = {}
    if not run.data.val_is_test and (cfg.tta or run.lookahead is not None):
        # the held-out score of exactly what is tested: the number to choose settings by
        final["val_acc_final"] = evaluate_run(run, run.data.x_val, run.data.y_val, cfg.tta)["acc"]
    test = (evaluate_run(run, run.data.x_test, run.data.y_test, cfg.tta, confusion=True) if cfg.test
            else {"acc": None, "loss": None})
    summary = _summary(run, test, final, command)
    if ddp.is_main:
        checkpoint.atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2))
    run.tb.finish(summary, cfg.epochs * run.steps)
    run.tb.close()
    ddp.barrier()  # no rank leaves (and tears down the group) while rank 0 still writes
    if cfg.test:
        run.log(f"test accuracy {test['acc']:.4f}  test loss {test['loss']:.4f}  wall {run.wall:.0f}s  "
                f"-> {run.run_dir}")
    else:
        run.log(f"held-out accuracy {final.get('val_acc_final', run.history[-1]['val_acc']):.4f} "
                f"(test set not used)  wall {run.wall:.0f}s  -> {run.run_dir}")
    return summary


def run_arithmetic(segments: list[dict], amp, epochs: int) -> str:
    """fp32, bf16 or fp16; a run of `epochs` resumed in another arithmetic (`amp=native` on
    another machine) says which epochs computed in which: "bf16 (epochs 1-40), fp32 (epochs 41-100)"."""
    marked = [g for g in segments if "arithmetic" in g]  # segments of older versions don't say
    spans = []  # [arithmetic, first epoch, last epoch]
    for g, nxt in zip(marked, [*marked[1:], None]):
        last = nxt["from_epoch"] if nxt else epochs
        if last == g["from_epoch"]:
            continue  # stopped before its first epoch: computed nothing
        if spans and spans[-1][0] == g["arithmetic"]:
            spans[-1][2] = last
        else:
            spans.append([g["arithmetic"], g["from_epoch"] + 1, last])
    if not spans:  # older records: this session's arithmetic is all there is to say
        return arithmetic_name(amp)
    if len(spans) == 1:  # one arithmetic, whatever a later session that trained nothing resolved to
        return spans[0][0]
    return ", ".join(f"{a} (epoch {lo})" if lo == hi else f"{a} (epochs {lo}-{hi})" for a, lo, hi in spans)


def _summary(run: Run, test: dict, final: dict, command) -> dict:
    cfg, data = run.cfg, run.data
    _note_segment_time(run)
    summary = {
        "format_version": runfolder.FORMAT_VERSION,
        "name": cfg.name, "seed": cfg.seed, "test_acc": test["acc"], "test_loss": test["loss"], **final,
        "val_acc_last": run.history[-1]["val_acc"] if run.history else None,  # the last epoch's, without TTA
        "tta": cfg.tta, "total_seconds": segment_seconds(run.segments, run.history),
        "last_segment_seconds": time.perf_counter() - run.t_start,
        "epochs": cfg.epochs, "steps_per_epoch": run.steps, "train_images": run.train_images,
        "parameters": count_parameters(run.model), "wall_seconds": run.wall,
        "mean_images_per_second": float(np.mean([r["images_per_second"] for r in run.history])),
        "device": device_name(run.device), "arithmetic": run_arithmetic(run.segments, run.amp, cfg.epochs),
        "versions": _versions(),
        "code": run.code, "segments": run.segments, "command": runfolder.command_words(command),
        "comparable": cfg.comparable, "reference": cfg.reference, "val_is_test": data.val_is_test,
        "norm": {"mean": data.mean.tolist(), "std": data.std.tolist()},
    }
    if test.get("confusion") is not None:  # the report's per-class figures, without the checkpoint
        summary["test_confusion"] = {"classes": list(CLASSES), "matrix": test["confusion"].tolist()}
    if run.ddp.active:
        summary["processes"] = run.ddp.world
    return summary


def _plot(run_dir: Path, history: list[dict], cfg: Config) -> None:
    from .plots import curves
    curves(history, run_dir / "curves.png", title=cfg.name, l2=cfg.l2)
