"""`cifarlab tune`: a hyperparameter search on Ray Tune, validated on held-out training images.

    cifarlab tune adamw --param 'lr=loguniform(1e-4,1e-2)' --param 'weight_decay=loguniform(1e-5,1e-1)' \\
        --samples 8 --epochs 6 --subset 10000 --out tunes/adamw

Each trial is an ordinary cifarlab run (a run folder under OUT/trials/<trial>/run)
of PRESET with the sampled values and the fixed key=value overrides. Every epoch it
reports its validation metrics to Tune (`tune.report`) with the run's checkpoint, so
Tune keeps trial checkpoints and a trial restored by Tune resumes from its last epoch;
ASHA stops the poor trials early (at 1, 2, 4, ... epochs with the defaults). The
validation set is `val_split` images held out of the training set (default: a tenth
of it), never the test set, so the search does not select on the test set.

Written to OUT: tune.csv (one row per trial, best first; also printed) and best.yaml,
a preset file of the best trial's values (`cifarlab train --config OUT/best.yaml`).

Search-space syntax (--param KEY=SPACE, KEY a config key, arguments read as YAML):
  loguniform(a,b)  uniform(a,b)  randint(a,b) (b excluded)  lograndint(a,b)
  choice(v1,v2,...)  (values may be lists: choice([0.1,0.01],[0.03,0.003]))
  grid(v1,v2,...)    (every value, times --samples)
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import FIELDS, ConfigError, check_type, from_dict, load_preset, to_dict
from ..files import atomic_write, atomic_write_text

SPACES = {"loguniform": 2, "uniform": 2, "randint": 2, "lograndint": 2, "choice": None, "grid": None}
METRIC = "val_acc"
BUDGET_KEYS = ("epochs", "subset", "val_split", "threads", "name", "description", "comparable", "reference")


def parse_param(spec: str) -> tuple[str, str, list]:
    """'lr=loguniform(1e-4,1e-1)' -> ('lr', 'loguniform', [0.0001, 0.1]), checked against the config."""
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=\s*(\w+)\s*\((.*)\)\s*", spec)
    if not m:
        raise ConfigError(f"--param {spec!r}: expected KEY=SPACE(ARGS), e.g. 'lr=loguniform(1e-4,1e-1)'; "
                          f"spaces: {', '.join(SPACES)}")
    key, kind, inner = m.groups()
    if key not in FIELDS:
        raise ConfigError(f"--param {spec!r}: unknown config key {key!r}. Valid keys: {', '.join(FIELDS)}")
    if key in BUDGET_KEYS:
        raise ConfigError(f"--param {spec!r}: {key} is set by the search itself, not searched")
    if kind not in SPACES:
        raise ConfigError(f"--param {spec!r}: unknown space {kind!r}; choose one of: {', '.join(SPACES)}")
    try:
        args = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError as e:
        raise ConfigError(f"--param {spec!r}: cannot read the arguments ({e.problem})") from None
    args = [float(a) if isinstance(a, str) and _is_float(a) else a for a in args]  # YAML 1.1 reads 1e-4 as text
    want = SPACES[kind]
    if want is not None:
        if len(args) != want or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"--param {spec!r}: {kind} takes two numbers (low, high)")
        lo, hi = args
        if not lo < hi:
            raise ConfigError(f"--param {spec!r}: low {lo} must be below high {hi}")
        if kind.startswith("log") and lo <= 0:
            raise ConfigError(f"--param {spec!r}: {kind} needs a positive low end")
        for v in (lo, hi):
            check_type(key, int(v) if kind.endswith("randint") else v)
    else:
        if not args:
            raise ConfigError(f"--param {spec!r}: {kind} needs at least one value")
        args = [check_type(key, a) for a in args]
    return key, kind, args


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def encoded_keys(params) -> set:
    """Keys whose values are lists (boundaries, values, ...): Tune sees them as JSON text,
    since it would read a list inside a trial's values as more parameters."""
    return {key for key, kind, args in params if kind in ("choice", "grid")
            and any(isinstance(a, (list, dict)) for a in args)}


def decode(config: dict, encoded: set) -> dict:
    return {k: (json.loads(v) if k in encoded else v) for k, v in config.items()}


def search_space(params: list[tuple[str, str, list]]) -> dict:
    from ray import tune
    space = {}
    encoded = encoded_keys(params)
    for key, kind, args in params:
        if key in space:
            raise ConfigError(f"--param {key} is given twice")
        if key in encoded:
            args = [json.dumps(a) for a in args]
        if kind == "grid":
            space[key] = tune.grid_search(args)
        elif kind == "choice":
            space[key] = tune.choice(args)
        else:
            space[key] = getattr(tune, kind)(*args)
    return space


def check_asha(grace_period, reduction_factor, epochs: int) -> None:
    """Refuse ASHA settings that Ray would refuse (an assertion, after Ray has started) or that cannot work."""
    if isinstance(grace_period, bool) or not isinstance(grace_period, int) or not 1 <= grace_period <= epochs:
        raise ConfigError(f"--grace-period {grace_period}: must be a whole number of epochs from 1 to the "
                          f"trials' {epochs} epochs (ASHA stops no trial before it; default 1)")
    if not (isinstance(reduction_factor, (int, float)) and not isinstance(reduction_factor, bool)
            and math.isfinite(reduction_factor) and reduction_factor > 1):
        raise ConfigError(f"--reduction-factor {reduction_factor}: must be a finite number above 1 (ASHA keeps "
                          f"1 trial in this many at each rung; default 2)")


def check_resources(cpus, cpus_per_trial: float, gpus_per_trial: float, address=None) -> None:
    """Refuse trial resources that cannot work: none, negative, or more than the local Ray instance
    has (Ray would then wait for them forever, with no trial started). A cluster (`address`) is
    trusted to have what it is asked for."""
    if not (math.isfinite(cpus_per_trial) and cpus_per_trial > 0):
        raise ConfigError(f"--cpus-per-trial {cpus_per_trial:g}: must be a number above 0 (the CPUs each "
                          f"trial holds; default 1)")
    if not (math.isfinite(gpus_per_trial) and gpus_per_trial >= 0):
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g}: must be 0 or more (a fraction shares a GPU)")
    if cpus is not None and cpus < 1:
        raise ConfigError(f"--cpus {cpus}: must be 1 or more")
    if address:
        return
    have = cpus or os.cpu_count() or 1
    if cpus_per_trial > have:
        where = "--cpus gives the local Ray instance" if cpus else "this machine has"
        raise ConfigError(f"--cpus-per-trial {cpus_per_trial:g}: more than the {have} CPUs {where}, "
                          f"so no trial could start")
    if gpus_per_trial > 0:
        import torch
        n = torch.cuda.device_count()
        if gpus_per_trial > n:
            raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g}: more than the {n} GPU(s) here, "
                              f"so no trial could start")


def default_val_split(cfg) -> int:
    """A tenth of the training images in use, in whole shares of the 10 classes."""
    n = cfg.subset or 50_000
    return max(10, n // 10 // 10 * 10)


class EpochReports:
    """What a trial reports to Tune: each epoch's metrics, with the run's checkpoint.

    The last epoch is held back until train() has returned, to go with the test accuracy
    (ASHA ends a trial at max_t); a run trained with test=false measures none, and its
    last epoch is reported all the same, without one. `send(metrics, checkpoint)` does
    the reporting: checkpoint is the run's checkpoint.pt, or None before there is one.
    """

    def __init__(self, epochs: int, send):
        self.epochs, self.send, self.last = epochs, send, None

    def on_epoch(self, row, model, run_dir) -> None:  # train()'s on_epoch
        if row["epoch"] == self.epochs:
            self.last = row
            return
        self._send(row, Path(run_dir))

    def finish(self, summary: dict, run_dir) -> None:
        """After train(): the last epoch; when Tune restarted a trial that had already finished
        its run, train() returned at once and the row is on disk."""
        from ..runfolder import read_metrics
        run_dir = Path(run_dir)
        self._send(self.last or read_metrics(run_dir)[-1], run_dir, summary.get("test_acc"))

    def _send(self, row, run_dir: Path, test_acc=None) -> None:
        metrics = {k: row[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                                       "epoch_seconds")}
        if test_acc is not None:
            metrics["test_acc"] = test_acc
        ckpt = run_dir / "checkpoint.pt"
        self.send(metrics, ckpt if ckpt.is_file() else None)


def _trainable(config: dict, base: dict, data_path, encoded: set = frozenset()):
    """One trial: the base config with the sampled values, trained epoch by epoch."""
    from ray import tune

    from .cluster import task_setup
    task_setup()  # before train's imports
    from ..train import train
    cfg = from_dict(decode(config, encoded), from_dict(base))
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    resume = False
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # Tune restored this trial: continue from its last reported epoch
        with ckpt.as_directory() as d:
            with open(Path(d) / "checkpoint.pt", "rb") as src:  # never half a checkpoint in the run folder
                atomic_write(run_dir / "checkpoint.pt", lambda f: shutil.copyfileobj(src, f))
        resume = True

    def send(metrics, checkpoint):
        if checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(checkpoint, Path(tmp) / "checkpoint.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    reports = EpochReports(cfg.epochs, send)
    # without a checkpoint a restarted trial starts over (force): its folder may hold a start cut short
    summary = train(None if resume else cfg, run_dir, data_path=data_path, resume=resume, force=not resume,
                    log=lambda *a: None, progress=False, command=["cifarlab", "tune"], on_epoch=reports.on_epoch)
    reports.finish(summary, run_dir)


class _Lines:
    """A line per trial result on the console, instead of Tune's tables."""

    def __new__(cls):
        from ray.tune import Callback

        class Lines(Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                print(f"  {trial.trial_id}  epoch {result['epoch']:>3}  val_acc {result['val_acc']:.4f}  "
                      f"val_loss {result['val_loss']:.4f}", flush=True)

            def on_trial_complete(self, iteration, trials, trial, **info):
                r = trial.last_result or {}
                print(f"  {trial.trial_id}  done after {r.get('epoch', 0)} epochs", flush=True)

            def on_trial_error(self, iteration, trials, trial, **info):
                print(f"  {trial.trial_id}  FAILED: see {trial.local_path}/error.txt", flush=True)
        return Lines()


@dataclass
class SearchOptions:
    """How a search runs, beside what it searches (run_search's config, spaces, samples and folder).

    baseline: the first trial takes the preset's own values, a reference at the same budget.
    preset: the preset name base_cfg came from (best.yaml then says `base: preset`).
    address, num_cpus: the Ray cluster to join, or the CPUs of the one started here."""
    address: str | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    grace_period: int = 1
    reduction_factor: float = 2
    seed: int = 0
    data_path: str | None = None
    num_cpus: int | None = None
    baseline: bool = False
    preset: str | None = None


def run_search(base_cfg, params: list, samples: int, out: Path, opts: SearchOptions | None = None) -> list[dict]:
    """Run the search; returns the table rows, best first, and writes tune.csv and best.yaml."""
    o = opts or SearchOptions()
    address, cpus_per_trial, gpus_per_trial, seed = o.address, o.cpus_per_trial, o.gpus_per_trial, o.seed
    grace_period, reduction_factor, data_path, baseline = o.grace_period, o.reduction_factor, o.data_path, o.baseline
    check_asha(grace_period, reduction_factor, base_cfg.epochs)  # before Ray starts
    from .cluster import connect
    # Tune warns when a trial checkpoints every few seconds; with small epochs that is the design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    connect(address, o.num_cpus, log_to_driver=False)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = to_dict(base_cfg)
    encoded = encoded_keys(params)
    trainable = tune.with_resources(tune.with_parameters(_trainable, base=base, data_path=data_path,
                                                         encoded=encoded),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    points = [{k: (json.dumps(getattr(base_cfg, k)) if k in encoded else getattr(base_cfg, k))
               for k, _, _ in params}] if baseline else None
    if baseline and any(kind == "grid" for _, kind, _ in params):
        raise ConfigError("--baseline and grid(...) do not mix: a grid already lists its values")
    scheduler = ASHAScheduler(time_attr="epoch", max_t=base_cfg.epochs, grace_period=grace_period,
                              reduction_factor=reduction_factor)
    tuner = tune.Tuner(
        trainable, param_space=search_space(params),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, num_samples=samples,
                                    search_alg=BasicVariantGenerator(points_to_evaluate=points,
                                                                     random_state=seed),
                                    trial_dirname_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name="trials", storage_path=str(out), verbose=0, callbacks=[_Lines()],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  # a trial whose worker dies is restarted once, from its checkpoint
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    t0 = time.time()
    grid = tuner.fit()
    keys = [p[0] for p in params]
    rows = []
    for r in grid:
        m = r.metrics or {}
        conf = decode(r.config, encoded)
        df = r.metrics_dataframe
        rows.append({"trial": m.get("trial_id", Path(r.path).name), **{k: conf.get(k) for k in keys},
                     "epochs": m.get("epoch", 0), "val_acc": m.get("val_acc", float("nan")),
                     "val_loss": m.get("val_loss", float("nan")), "train_loss": m.get("train_loss", float("nan")),
                     "best_val_acc": float(df["val_acc"].max()) if df is not None and len(df) else float("nan"),
                     "status": "error" if r.error else ("finished" if m.get("epoch") == base_cfg.epochs
                                                        else "stopped early"),
                     "test_acc": m.get("test_acc", float("nan")), "run": str(Path(r.path) / "run")})
    # Rank by the last validation accuracy; a trial ASHA stopped is ranked by where it was stopped.
    rows.sort(key=lambda x: -x["val_acc"] if x["val_acc"] == x["val_acc"] else float("inf"))
    _write_table(out / "tune.csv", rows)
    ok = [x for x in rows if x["status"] != "error"]
    if not ok:
        raise RuntimeError(f"every trial failed; see the error.txt files under {out / 'trials'}")
    write_best(out / "best.yaml", base_cfg, {k: ok[0][k] for k in keys}, ok[0], samples, time.time() - t0,
               o.preset)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_table(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, list) else v)
                    for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def format_table(rows: list[dict]) -> str:
    cols = [c for c in rows[0] if c != "run"]
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_best(path: Path, base_cfg, values: dict, row: dict, samples: int, seconds: float,
               parent: str | None = None) -> None:
    """The best trial as a preset file: `base: parent` (a preset name; else every setting
    is written out), the fixed overrides, the found values."""
    d = to_dict(base_cfg)
    ref = to_dict(load_preset(parent)) if parent else to_dict(from_dict({}))
    changed = {k: v for k, v in d.items() if k not in BUDGET_KEYS and v != ref.get(k)}
    changed.update(values)
    head = (f"# Best of {samples} trials of `cifarlab tune` ({seconds / 60:.0f} min): validation accuracy "
            f"{row['val_acc']:.4f}\n# on {base_cfg.val_split} held-out training images after {row['epochs']} "
            f"epochs, subset={base_cfg.subset or 'all'}.\n# Budget keys (epochs, subset, val_split) are left "
            f"to the preset; set them when you train.\n")
    body = {}
    if parent:
        body["base"] = parent
    body["description"] = f"{parent or base_cfg.name} tuned: " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    body.update(changed)
    # one key a line, lists inline, as the preset files are written
    atomic_write_text(path, head + "".join(
        f"{k}: {yaml.safe_dump(v, default_flow_style=True, width=1000).strip()}\n" if isinstance(v, (list, dict))
        else yaml.safe_dump({k: v}, default_flow_style=False, width=1000) for k, v in body.items()))
