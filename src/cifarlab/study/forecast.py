"""How long a study will take, before it starts: `cifarlab study --plan`.

    from cifarlab.study.forecast import forecast
    fc = forecast(jobs, workers=2)          # jobs: study.plan(...); measures each network a few seconds
    print(fc.table())

Every distinct network of the plan (the settings that change the cost of a step: layers,
batch, augmentation, arithmetic, optimiser) is timed here, on this device, with the
thread share a study worker gets: a few seconds of training steps on random images of
CIFAR-10's shape through the training loop's own code (make_batch, train_step), and a
pass of the evaluation. A run's projection is its remaining epochs times (its training
images at the measured rate, plus its validation images at the evaluation rate), plus
the final test. The study's total places the runs on the workers in the order the study
hands them out (the longest first on several workers, see runner.execution_order), each
worker taking the next run when it is free, as the local backend does.

The figures are one process measured alone: workers that share memory bandwidth, or
anything else on the machine, make the real runs slower.
"""
from __future__ import annotations

import heapq
import json
import sys
import time
from dataclasses import dataclass, field

from ..errors import UsageError
from .jobs import (TEST_IMAGES, StudyError, epochs_done, images_per_epoch, job_config, ordered_presets, run_status)
from .runner import execution_order, plan

# Settings that change what a training step costs; everything else (seeds, rates,
# schedules, epochs) changes how many steps there are or nothing at all.
COST_KEYS = ("model", "blocks", "widths", "dense", "dropout", "batchnorm", "bn_dropout_order", "whiten",
             "augment", "batch_size", "optimizer", "l2", "weight_decay", "lookahead_every", "channels_last",
             "amp", "compile", "eval_batch_size", "device")


@dataclass
class Speed:
    train_ips: float  # training images per second
    eval_ips: float  # evaluated images per second (one view)
    threads: int
    device: str
    arithmetic: str = "fp32"  # what the run computes in here (amp=native resolves per device)


@dataclass
class RunPlan:
    label: str
    run_dir: str
    network: str  # the label of the network it shares its cost with
    epochs: int
    done: int  # epochs already in its metrics.csv
    status: str  # finished, partial, new
    train_images: int  # per epoch, as the loop steps through them
    val_images: int  # evaluated after every epoch
    test_views: int  # test images x TTA views, once at the end (0 with test=false)
    comparable: bool
    seconds: float = 0.0  # projected, remaining


@dataclass
class Forecast:
    runs: list[RunPlan]
    speeds: dict  # network label -> Speed
    workers: int
    seconds: float  # the study's remaining wall time on `workers`, the runs handed out in `order`
    device: str
    started: float = field(default_factory=time.time)
    order: str = "in study order"  # how the runs are handed to the workers (runs is in that order)
    seconds_in_study_order: float | None = None  # the same runs in the study's order, where that differs

    def table(self) -> str:
        out = [f"plan: {len(self.runs)} runs on {self.workers} worker(s) x {self._threads()} thread(s), "
               f"{self.device}", "",
               f"{'network':<24} {'train img/s':>11} {'eval img/s':>10} {'arithmetic':>10}   "
               "(each measured alone, a few seconds)"]
        for name, s in self.speeds.items():
            out.append(f"{name:<24} {s.train_ips:>11,.0f} {s.eval_ips:>10,.0f} {s.arithmetic:>10}")
        out += ["", f"{'run (' + self.order + ')':<28} {'epochs':>6} {'images':>7} {'status':<15} {'to go':>8}"]
        for r in self.runs:
            status = f"partial {r.done}/{r.epochs}" if r.status == "partial" else r.status
            mark = "" if r.comparable else " †"
            out.append(f"{r.label + mark:<28} {r.epochs:>6} {r.train_images:>7,} {status:<15} "
                       f"{duration(r.seconds):>8}")
        finished = sum(r.status == "finished" for r in self.runs)
        run_seconds = sum(r.seconds for r in self.runs)
        eta = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started + self.seconds))
        out += ["", f"finished already: {finished} of {len(self.runs)}",
                f"projected: {duration(run_seconds)} of runs; {duration(self.seconds)} on {self.workers} "
                f"worker(s), done around {eta} if started now"]
        if self.seconds_in_study_order is not None and self.seconds_in_study_order != self.seconds:
            out.append(f"in the study's order (--order study): {duration(self.seconds_in_study_order)} "
                       f"on {self.workers} worker(s)")
        if any(not r.comparable for r in self.runs):
            out.append("† epochs or data scaled away from the preset: not comparable to the published figures")
        return "\n".join(out)

    def _threads(self) -> int:
        return next(iter(self.speeds.values())).threads if self.speeds else 0

    def to_dict(self) -> dict:
        return {"workers": self.workers, "seconds": self.seconds, "device": self.device,
                "speeds": {k: vars(v) for k, v in self.speeds.items()}, "runs": [vars(r) for r in self.runs]}


def duration(seconds: float) -> str:
    """3h 05m, 12m 40s, 0s: hours and minutes, or minutes and seconds under an hour."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def network_key(cfg) -> str:
    from ..config import to_dict
    d = to_dict(cfg)
    return json.dumps({k: d[k] for k in COST_KEYS}, sort_keys=True)


def measure(cfg, device, threads: int, seconds: float = 3.0) -> Speed:
    """Training and evaluation throughput of `cfg`'s network on `device` with `threads` CPU threads,
    through the training loop's own make_batch and train_step, on random images."""
    import torch

    from ..engine import (Data, arithmetic_name, build_training, device_name, evaluate, make_batch, train_step,
                          use_arithmetic)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, fwd, opt = build_training(cfg, device)
    amp = use_arithmetic(cfg, device)
    n = max(4 * cfg.batch_size, cfg.eval_batch_size, 1024)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    mean = torch.zeros(3, device=device)
    std = torch.ones(3, device=device)
    data = Data(x, y, x, y, x, y, mean, std, val_is_test=True)
    model.setup_from_data(x, mean, std)

    def sync(v):
        v.item()  # the host waits for the device, as the loop does once an epoch

    def steps(k: int) -> float:
        t0, loss = time.perf_counter(), torch.zeros((), device=device)
        for _ in range(k):
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).to(device)
            xb, yb = make_batch(data, idx, cfg, gen)
            total, _ = train_step(model, fwd, opt, xb, yb, cfg, cfg.lr, amp)
            loss += total
        sync(loss)
        return time.perf_counter() - t0

    steps(2)  # warm-up: allocations, kernel selection, a compile
    k, spent = 1, steps(1)
    while spent < seconds / 2:  # grow the timed block until it fills its share of the time
        k = max(k + 1, min(4 * k, int(k * (seconds / 2) / max(spent, 1e-3))))
        spent = steps(k)
    train_ips = k * cfg.batch_size / spent
    m = min(n, cfg.eval_batch_size * max(1, int(2048 // cfg.eval_batch_size)))
    evaluate(model, x[:cfg.eval_batch_size], y[:cfg.eval_batch_size], mean, std, cfg.eval_batch_size,
             cfg.channels_last, amp)  # warm-up
    reps, t0 = 0, time.perf_counter()
    while reps == 0 or time.perf_counter() - t0 < seconds / 2:
        evaluate(model, x[:m], y[:m], mean, std, cfg.eval_batch_size, cfg.channels_last, amp)
        reps += 1
    eval_ips = reps * m / (time.perf_counter() - t0)
    return Speed(train_ips, eval_ips, torch.get_num_threads() if device.type == "cpu" else 0,
                 device_name(device), arithmetic_name(amp))


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of running `durations` in order on `workers`, each taking the next when free."""
    free = [0.0] * max(1, workers)
    for d in durations:
        t = heapq.heappop(free)
        heapq.heappush(free, t + d)
    return max(free)


def forecast(jobs, workers: int, seconds: float = 3.0, log=None, order: str = "auto") -> Forecast:
    """Project every job of a study plan (see study.plan) on this device; measures each network once.
    The runs to do are placed on the workers in the order the study hands them out (`order`, see
    runner.execution_order); the finished ones are listed first."""
    from ..engine import pick_device
    speeds: dict[str, Speed] = {}
    by_key: dict[str, str] = {}
    runs = []
    device = None
    for job in jobs:
        cfg = job_config(job)
        device = device or pick_device(cfg.device)
        key = network_key(cfg)
        if key not in by_key:
            by_key[key] = job.preset
            if log:
                log(f"measuring {job.preset}'s network ({seconds:g} s) ...")
            speeds[job.preset] = measure(cfg, device, job.threads or 1, seconds)
        speed = speeds[by_key[key]]
        status = run_status(job.run_dir)
        done = cfg.epochs if status == "finished" else min(epochs_done(job.run_dir), cfg.epochs)
        train_n, val_n = images_per_epoch(cfg)
        views = ({0: 1, 1: 2, 2: 6}.get(cfg.tta, 1) * TEST_IMAGES) if cfg.test else 0
        r = RunPlan(job.label, job.run_dir, by_key[key], cfg.epochs, done, status, train_n, val_n, views,
                    cfg.comparable)
        if status != "finished":
            r.seconds = ((cfg.epochs - done) * (train_n / speed.train_ips + val_n / speed.eval_ips)
                         + views / speed.eval_ips)
        runs.append(r)
    by_dir = {r.run_dir: r for r in runs}
    todo = [j for j in jobs if by_dir[j.run_dir].status != "finished"]
    queue = [by_dir[j.run_dir] for j in execution_order(todo, order, workers)]
    in_order = [by_dir[j.run_dir] for j in todo]
    fc = Forecast([r for r in runs if r.status == "finished"] + queue, speeds, workers,
                  makespan([r.seconds for r in queue], workers),
                  next(iter(speeds.values())).device if speeds else "")
    if queue != in_order:
        fc.order = "longest first"
        fc.seconds_in_study_order = makespan([r.seconds for r in in_order], workers)
    return fc


def plan_study(presets, seeds: int, workers: int, study_dir, overrides, epochs_scale: float = 1.0,
               data_path=None, seconds: float = 3.0, log=print, seeds_for: dict | None = None,
               order: str = "auto") -> int:
    """`study --plan`: what the same command would run and how long it would take; runs nothing,
    writes nothing."""
    if workers < 1 or seeds < 1 or epochs_scale <= 0 or seconds <= 0:
        raise UsageError("--workers and --seeds must be at least 1, --epochs-scale and --plan-seconds above 0")
    try:
        jobs = plan(ordered_presets(presets), seeds, list(overrides), study_dir, epochs_scale, data_path, workers,
                    seeds_for=seeds_for)
        execution_order([], order, workers)  # an unknown order fails here, before anything is measured
    except StudyError as e:
        raise UsageError(str(e)) from None
    fc = forecast(jobs, workers, seconds, log=lambda m: print(m, file=sys.stderr), order=order)
    log(f"study {study_dir}")
    log(fc.table())
    return 0
