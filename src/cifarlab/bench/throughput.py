"""Training throughput side by side: cifarlab's own step, a plain PyTorch loop, Keras.

    cifarlab bench                                   # both models, all contenders, 5 repetitions
    cifarlab bench --models vgg3 --reps 3 --steps 40 --keras-python /path/to/venv/bin/python
    cifarlab bench --peak-gflops 157 --json bench.json
    cifarlab bench --runs runs/fast_combined-* --target 0.88   # only the time-to-accuracy of run folders

Contenders, on the same images, model and batch (64, fp32, SGD lr 0.001 momentum 0.9):
- cifarlab: train.py's own `make_batch` + `train_step` (uint8 data, batch augmentation);
- plain: the loop most people write: nn.Sequential, a DataLoader over a Dataset that
  converts and augments one image at a time (numpy shift with edge fill, and flip);
- keras: the same network in Keras on TensorFlow, in its own process (cifarlab.bench.keras_worker);
  skipped with a note when TensorFlow is not importable by --keras-python.
- cifarlab-bf16, keras-bf16: the same two in bf16 mixed precision (amp=bf16; Keras's
  "mixed_bfloat16" policy), run only where the device computes bf16 natively (a CPU with
  AVX-512 BF16 or AMX, a GPU with bf16): the study's protocol is fp32, so these are
  extra rows, each measured against the bf16 peak and compared with its fp32 twin.
Contenders alternate (A B C A B C ...) for --reps repetitions of --steps steps each, so
drift on a shared machine hits them alike; the table shows the median, the range and
each contender's ratio to cifarlab. It also counts the model's FLOPs per training
image, measures the device's fp32 peak (matmul or convolution, the better) (or takes --peak-gflops) and prints the
fraction of it reached, and times evaluation of the 10,000-image test set.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TRAIN_IMAGES, ConfigError, apply_overrides, load_preset, train_images
from ..errors import CifarlabError
from ..machine import cpu_name
from ..runfolder import command_words, read_metrics, read_summary
from ..engine import (bf16_units, build_training, evaluate, make_batch, pick_device, prepare_data, setup_threads,
                      train_step, use_arithmetic)

VGG3: list[str] = []  # the study's baseline as the vgg3 preset has it
COMBINED = ["batchnorm=true", "dropout=[0.2,0.3,0.4,0.5]", "augment=shift_flip"]  # the study's combined
MODELS = {"vgg3": VGG3, "combined": COMBINED}
CONTENDERS = ("cifarlab", "plain", "keras", "cifarlab-bf16", "keras-bf16")
BF16 = ("cifarlab-bf16", "keras-bf16")
KERAS = ("keras", "keras-bf16")
WARMUP = 5  # untimed steps of each contender before the repetitions


class BenchError(CifarlabError, ValueError):
    """A bench option that cannot work; the message lists what is valid."""


def bench_config(model_overrides: list[str], extra: list[str] = (), subset: int = 4000):
    """The vgg3 preset with a model's overrides, on a class-balanced subset, for timing."""
    return apply_overrides(load_preset("vgg3"), [*model_overrides, f"subset={subset}", *extra])


# --- FLOPs and peak ----------------------------------------------------------------------

def _counted(model: nn.Module, shape, backward: bool) -> int:
    """FLOPs torch's FlopCounterMode counts for one batch of `shape`: a multiply-add is 2 FLOPs;
    convolutions and matrix products only (BN, pooling, ReLU and bias adds are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    was = model.training
    model.eval()  # BN on a batch of one; neither BN nor dropout changes what is counted
    x = torch.zeros(shape, device=next(model.parameters()).device)
    try:
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
            out = model(x)
            if backward:  # the gradients into the weights, not into .grad: the model is left as it was
                torch.autograd.grad(out.sum(), [p for p in model.parameters() if p.requires_grad])
    finally:
        model.train(was)
    return counter.get_total_flops()


def forward_flops(model: nn.Module, shape=(1, 3, 32, 32)) -> int:
    """FLOPs of the convolutions and linear layers for one image (multiply and add counted apart)."""
    return _counted(model, shape, backward=False)


def train_flops(model: nn.Module, shape=(1, 3, 32, 32)) -> int:
    """A training step per image: forward, the weight gradients and the input gradients of every
    layer but the first (the image itself needs no gradient): about 3x the forward."""
    return _counted(model, shape, backward=True)


def measure_peak_gflops(device: torch.device, n: int = 2048, seconds: float = 3.0,
                        dtype=torch.float32) -> float:
    """The practical peak in GFLOP/s (fp32, or `dtype`): the better of an n x n matrix multiply and a large
    3x3 convolution. Both are needed: on AMD CPUs torch's matmul goes through MKL, which takes
    an AVX2 path, while oneDNN's convolutions use AVX-512 (benchmarks/README.md has the figures);
    the sgemm alone would put our own training above "100%"."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    x = torch.randn(16, 512, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(512, 512, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    ops = [(lambda: a @ b, 2 * n ** 3),
           (lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * 16 * 32 * 32 * 512 * 512 * 9)]
    best = 0.0
    with torch.no_grad():
        for op, flops in ops:
            for _ in range(2):
                op()
            _sync(device)
            k, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2:
                op()
                k += 1
                _sync(device)
            best = max(best, flops * k / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_name()}, {torch.get_num_threads()} threads of {os.cpu_count()} CPUs, torch {torch.__version__}"


# --- contenders ----------------------------------------------------------------------------

class CifarlabContender:
    """train.py's own code path: make_batch + train_step over a shuffled resident data set."""

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.data = prepare_data(cfg, device)
        self.model, self.fwd, self.opt = build_training(cfg, device)
        self.amp = use_arithmetic(cfg, device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.n = len(self.data.y_train)
        self.perm, self.pos = None, self.n

    def run(self, steps: int) -> float:
        bs, loss_sum = self.cfg.batch_size, torch.zeros((), device=self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            if self.pos + bs > self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.gen).to(self.device), 0
            idx = self.perm[self.pos:self.pos + bs]
            self.pos += bs
            xb, yb = make_batch(self.data, idx, self.cfg, self.gen)
            total, _ = train_step(self.model, self.fwd, self.opt, xb, yb, self.cfg, self.cfg.lr, self.amp)
            loss_sum += total
        loss_sum.item()  # one host sync, as the training loop has per epoch
        return steps * bs / (time.perf_counter() - t0)


class ImageDataset(torch.utils.data.Dataset):
    """One image at a time, as most PyTorch code does it: uint8 -> float, then shift and flip."""

    def __init__(self, x: np.ndarray, y: np.ndarray, augment: bool, shift: int = 3):
        self.x, self.y, self.augment, self.shift = x, y, augment, shift
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].astype(np.float32) / 255.0  # (3, 32, 32)
        if self.augment:
            s = self.shift
            dx, dy = self.rng.integers(-s, s + 1, 2)
            img = np.pad(img, ((0, 0), (s, s), (s, s)), mode="edge")[:, s + dy:s + dy + 32, s + dx:s + dx + 32]
            if self.rng.random() < 0.5:
                img = img[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)), int(self.y[i])


def plain_model(batchnorm: bool, rates) -> nn.Sequential:
    layers, c = [], 3
    for b, w in enumerate((32, 64, 128)):
        for _ in range(2):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
            if batchnorm:
                layers.append(nn.BatchNorm2d(w))
            c = w
        layers.append(nn.MaxPool2d(2))
        if rates[b]:
            layers.append(nn.Dropout(rates[b]))
    layers += [nn.Flatten(), nn.Linear(128 * 16, 128), nn.ReLU()]
    if batchnorm:
        layers.append(nn.BatchNorm1d(128))
    if rates[3]:
        layers.append(nn.Dropout(rates[3]))
    return nn.Sequential(*layers, nn.Linear(128, 10))


class PlainContender:
    """The straightforward loop: DataLoader(Dataset), nn.Sequential, loss.item() every step."""

    def __init__(self, cfg, x: np.ndarray, y: np.ndarray, workers: int = 0):
        rates = cfg.dropout if isinstance(cfg.dropout, list) else [cfg.dropout] * 4
        self.model = plain_model(cfg.batchnorm, rates)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        self.loss = nn.CrossEntropyLoss()
        ds = ImageDataset(x, y, cfg.augment != "none")
        self.loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True,
                                                  num_workers=workers, drop_last=True,
                                                  persistent_workers=workers > 0)
        self.it = iter(self.loader)
        self.bs = cfg.batch_size

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, steps: int) -> float:
        self.model.train()
        running = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            xb, yb = self._next()
            self.opt.zero_grad()
            loss = self.loss(self.model(xb), yb)
            loss.backward()
            self.opt.step()
            running += loss.item()
        return steps * self.bs / (time.perf_counter() - t0)


class KerasContender:
    """Keras on TensorFlow in a worker process, driven over stdin/stdout."""

    def __init__(self, model: str, x: np.ndarray, y: np.ndarray, python: str, bf16: bool = False,
                 threads: int | None = None):
        self.tmp = tempfile.TemporaryDirectory(prefix="cifarlab-keras-")
        path = Path(self.tmp.name) / "data.npz"
        np.savez(path, x=x.transpose(0, 2, 3, 1), y=y)  # Keras wants channels last
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([python, "-m", "cifarlab.bench.keras_worker", str(path), model,
                                      *(["bf16"] if bf16 else []), *([f"threads={threads}"] if threads else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.info = self._reply()

    def _reply(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()[-2000:]
                raise RuntimeError(f"Keras worker ended: {err.strip() or 'no message'}")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, steps: int) -> float:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._reply()["images_per_second"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.tmp.cleanup()


def keras_available(python: str) -> str | None:
    """None when `python` can import TensorFlow and Keras, else the reason it cannot."""
    try:
        p = subprocess.run([python, "-c", "import tensorflow, keras"], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {python}: {e}"
    if p.returncode:
        return (f"TensorFlow is not importable by {python} (install the extra: pip install "
                f"'cifarlab[keras]', or pass --keras-python of an environment that has it)")
    return None


# --- the bench -------------------------------------------------------------------------

def _steps_fit(name: str, steps: int, subset: int, warmup: int = WARMUP) -> None:
    """Every step a full, distinct batch: the warm-up and one repetition must fit in the subset."""
    try:
        cfg = bench_config(MODELS[name], [], subset)
    except ConfigError as e:
        raise BenchError(f"--subset {subset} is not a subset a run takes ({e})") from None
    n, bs = train_images(cfg), cfg.batch_size
    need = (steps + warmup) * bs
    if n < need:
        most = n // bs - warmup
        fix = f"use --steps {most} or fewer, or " if most >= 1 else ""
        fix += (f"--subset {need} or more" if need <= TRAIN_IMAGES
                else f"no subset is that large: at most {TRAIN_IMAGES // bs - warmup} steps fit in the "
                     f"{TRAIN_IMAGES:,} training images")
        raise BenchError(f"--steps {steps}: {steps} steps and {warmup} warm-up steps of batch {bs} need {need:,} "
                         f"distinct training images, and --subset {subset} gives {n:,}; {fix}")


def bench_model(name: str, contenders, reps: int, steps: int, subset: int, device, log=print,
                keras_python: str | None = None, plain_workers: int = 0, warmup: int = WARMUP,
                probe=None) -> dict:
    """Alternate the contenders `reps` times; `probe()`, when given, runs once per repetition too
    (the peak's matmul, so it samples the same machine load as the contenders)."""
    _steps_fit(name, steps, subset, warmup)
    cfg = bench_config(MODELS[name], [f"device={device.type}"], subset)
    runners, notes = {}, {}
    own = CifarlabContender(cfg, device)
    runners["cifarlab"] = own
    x = own.data.x_train.cpu().numpy()
    y = own.data.y_train.cpu().numpy()
    bf16 = [c for c in contenders if c in BF16]
    if bf16 and not bf16_units(device):
        for c in bf16:
            notes[c] = "skipped: this device has no bf16 units (AVX-512 BF16 or AMX on a CPU), only emulation"
        contenders = [c for c in contenders if c not in BF16]
    if "cifarlab-bf16" in contenders:
        runners["cifarlab-bf16"] = CifarlabContender(apply_overrides(cfg, ["amp=bf16"]), device)
    if "plain" in contenders:
        runners["plain"] = PlainContender(cfg, x, y, plain_workers)
    keras_why = None
    for k in KERAS:
        if k in contenders:
            keras_why = keras_why or keras_available(keras_python or sys.executable)
            if keras_why:
                notes[k] = f"skipped: {keras_why}"
                log(f"{k}: {notes[k]}")
            else:
                runners[k] = KerasContender(name, x, y, keras_python or sys.executable, bf16=k == "keras-bf16",
                                            threads=torch.get_num_threads())  # the cores cifarlab computes on
    try:
        for r in runners.values():  # warm-up: allocator, oneDNN kernels, graph tracing
            r.run(warmup)
        samples = {k: [] for k in runners}
        for rep in range(reps):
            for k, r in runners.items():
                samples[k].append(r.run(steps))
            if probe:
                probe()
            log(f"  {name} rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items()))
    finally:
        for k in KERAS:
            if k in runners:
                runners[k].close()
    flops = train_flops(own.model)
    ref = statistics.median(samples["cifarlab"])
    ref16 = statistics.median(samples["cifarlab-bf16"]) if "cifarlab-bf16" in samples else None
    rows = []
    for k, v in samples.items():
        med = statistics.median(v)
        rows.append({"contender": k, "precision": "bf16" if k in BF16 else "fp32", "images_per_second": med,
                     "min": min(v), "max": max(v), "samples": v, "ratio": ref / med,
                     "ratio_bf16": ref16 / med if ref16 else None, "gflops": med * flops / 1e9})
    info = {k: runners[k].info for k in KERAS if k in runners}
    return {"model": name, "batch_size": cfg.batch_size, "train_mflops_per_image": flops / 1e6,
            "forward_mflops_per_image": forward_flops(own.model) / 1e6, "rows": rows, "notes": notes,
            "info": info, "_own": own}


def eval_seconds(own: CifarlabContender, amp=None) -> dict:
    """Seconds to evaluate the 10,000-image test set with train.py's evaluate."""
    d = own.data
    evaluate(own.model, d.x_test[:1000], d.y_test[:1000], d.mean, d.std, 1000, own.cfg.channels_last, amp)
    t0 = time.perf_counter()
    r = evaluate(own.model, d.x_test, d.y_test, d.mean, d.std, own.cfg.eval_batch_size,
                 own.cfg.channels_last, amp)
    return {"seconds": time.perf_counter() - t0, "images": len(d.y_test), "acc": r["acc"]}


def time_to_accuracy(history: list[dict], target: float, key: str = "val_acc") -> dict | None:
    """Wall seconds and epoch at which `key` first reaches `target`, from a run's metrics rows."""
    for r in history:
        if r[key] >= target:
            return {"epoch": int(r["epoch"]), "wall_seconds": r["wall_seconds"], "acc": r[key], "at": "epoch"}
    return None


def run_time_to_accuracy(run_dir: Path, target: float) -> dict | None:
    """When a run folder's test accuracy first reached `target`.

    The epoch rows count where they measure the test set (the study's protocol, no
    val_split); otherwise, or when no row reaches it, the final test evaluation (with the
    run's test-time augmentation and Lookahead weights) counts, at the run's whole time
    from data loading to that evaluation (summary.json's total_seconds)."""
    summary = read_summary(run_dir) if (run_dir / "summary.json").is_file() else {}
    if summary.get("val_is_test", True):
        hit = time_to_accuracy(read_metrics(run_dir), target)
        if hit:
            return hit
    acc = summary.get("test_acc")
    if acc is not None and acc >= target:
        return {"epoch": summary["epochs"], "wall_seconds": summary["total_seconds"], "acc": acc, "at": "final"}
    return None


# A busy process as a user's other work is: a plain Python loop, one core's worth of it.
BUSY_LOOP = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_processes(n: int):
    """N busy processes beside the block (`--busy N`): the contenders are timed on a machine whose
    cores are shared, as a laptop's or a shared server's are. They are ended when the block ends,
    however it ends; yields their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(0.2 if n else 0)  # running before the first timed step
        if any(p.poll() is not None for p in procs):
            raise BenchError("a busy process of --busy ended at once; cannot measure beside it")
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _models(args) -> list[str]:
    return [m for m in (args.models if args.models is not None else
                        "" if args.runs else "vgg3,combined").split(",") if m]


def check_args(args) -> None:
    """Refuse, before any work, options that would fail part-way: unknown names, no repetitions or
    steps, more steps than the subset holds distinct batches."""
    for what, given, valid in (("model", _models(args), MODELS), ("contender", args.contenders.split(","),
                                                                  CONTENDERS)):
        bad = [x for x in given if x and x not in valid]
        if bad:
            raise BenchError(f"unknown {what}{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
                             f"choose from: {', '.join(valid)}")
    for opt, v in (("--reps", args.reps), ("--steps", args.steps)):
        if v < 1:
            raise BenchError(f"{opt} {v}: must be 1 or more")
    busy = getattr(args, "busy", 0)
    if busy < 0 or busy > 4 * (os.cpu_count() or 1):
        raise BenchError(f"--busy {busy}: the number of busy processes beside the contenders, 0 to "
                         f"{4 * (os.cpu_count() or 1)} (4 per core of this machine)")
    if args.plain_workers < 0:
        raise BenchError(f"--plain-workers {args.plain_workers}: must be 0 or more (0: the plain loop loads "
                         "its batches in its own process)")
    for opt, v in (("--peak-gflops", args.peak_gflops), ("--peak-bf16-gflops", args.peak_bf16_gflops)):
        if not math.isfinite(v) or v < 0:
            raise BenchError(f"{opt} {v:g}: a peak in GFLOP/s, above 0 (leave it out and the bench measures it)")
    if not (0 < args.target <= 1):
        raise BenchError(f"--target {args.target:g}: an accuracy as a fraction, above 0 and at most 1 "
                         f"(0.88 for 88%)")
    for name in _models(args):
        _steps_fit(name, args.steps, args.subset)


def run(args, log=print, command=None) -> dict:
    """The benchmark `args` (bench's command-line options) ask for; `command` (the command line)
    is recorded in the result, none when None."""
    check_args(args)
    models = _models(args)
    setup_threads(apply_overrides(load_preset("vgg3"), [f"threads={args.threads}"]))
    device = pick_device(args.device)
    busy = getattr(args, "busy", 0)
    result = {"device": device_description(device), "reps": args.reps, "steps": args.steps,
              "subset": args.subset, "busy": busy, "models": [], "command": command_words(command)}
    log(f"device: {result['device']}" + (f"; timed beside {busy} busy process{'es' if busy > 1 else ''}"
                                         if busy else ""))
    if args.peak_gflops:
        result["peak_gflops"], result["peak_source"] = args.peak_gflops, "given"
    contenders = [c for c in args.contenders.split(",") if c]
    probe = None
    if not args.peak_gflops and not args.no_peak and models:
        # A shared machine lowers any one measurement: sample the peak once per repetition
        # and keep the best, the closest to what the cores give when nothing else runs.
        with16 = any(c in BF16 for c in contenders) and bf16_units(device)
        peaks = result["peak_samples"] = [measure_peak_gflops(device)]
        peaks16 = result["peak_bf16_samples"] = [measure_peak_gflops(device, dtype=torch.bfloat16)] if with16 else []

        def probe():
            peaks.append(measure_peak_gflops(device, seconds=1.0))
            if with16:
                peaks16.append(measure_peak_gflops(device, seconds=1.0, dtype=torch.bfloat16))
        result["peak_source"] = "measured: best of sgemm 2048 and a 3x3 conv 512->512, over the run"
        if busy:  # the peak is the machine's, measured before the busy processes start, not beside them
            probe = None
            result["peak_source"] = "measured: best of sgemm 2048 and a 3x3 conv 512->512, before --busy"
    with busy_processes(busy):
        if busy and not args.threads:  # the default count is chosen beside the busy processes, as a run's is
            setup_threads(load_preset("vgg3"))
            result["device"] = device_description(device)
            log(f"default threads beside --busy: {torch.get_num_threads()}")
        for name in models:
            m = bench_model(name, contenders, args.reps, args.steps, args.subset, device, log,
                            args.keras_python, args.plain_workers, probe=probe)
            own = m.pop("_own")
            if not args.no_eval:
                m["eval_fp32"] = eval_seconds(own)
                if device.type == "cpu" and torch.backends.mkldnn.is_available():
                    m["eval_bf16"] = eval_seconds(own, torch.bfloat16)
            result["models"].append(m)
    if probe:
        result["peak_gflops"] = max(result["peak_samples"])
        if result["peak_bf16_samples"]:
            result["peak_bf16_gflops"] = max(result["peak_bf16_samples"])
    if args.peak_bf16_gflops:
        result["peak_bf16_gflops"] = args.peak_bf16_gflops
    for m in result["models"]:
        for r in m["rows"]:
            peak = result.get("peak_bf16_gflops" if r["precision"] == "bf16" else "peak_gflops")
            r["fraction_of_peak"] = r["gflops"] / peak if peak else None
    if args.runs:
        result["time_to_accuracy"] = []
        for d in args.runs:
            hit = run_time_to_accuracy(Path(d), args.target)
            result["time_to_accuracy"].append({"run": str(d), "target": args.target, "reached": hit})
    log(report(result))
    return result


def report(result: dict) -> str:
    lines = [f"\ndevice: {result['device']}"]
    if result.get("busy"):
        lines.append(f"timed beside {result['busy']} busy process{'es' if result['busy'] > 1 else ''} "
                     f"(a plain Python loop each): the cores are shared")
    peak = result.get("peak_gflops")
    if peak:
        lines.append(f"peak: {peak:.0f} GFLOP/s fp32" + (f", {result['peak_bf16_gflops']:.0f} bf16"
                     if result.get("peak_bf16_gflops") else "") + f" ({result['peak_source']})")
    for m in result["models"]:
        lines.append(f"\n{m['model']}: batch {m['batch_size']}, SGD; "
                     f"{m['forward_mflops_per_image']:.1f} MFLOP/image forward, "
                     f"{m['train_mflops_per_image']:.1f} per training image; "
                     f"{result['reps']} reps x {result['steps']} steps, alternating")
        has16 = any(r.get("ratio_bf16") for r in m["rows"])
        lines.append(f"{'contender':<14} {'img/s':>7} {'min-max':>13} {'cifarlab is':>11}"
                     + (f" {'cifarlab-bf16 is':>16}" if has16 else "") + f" {'GFLOP/s':>8} {'of peak':>7}")
        for r in m["rows"]:
            frac = f"{r['fraction_of_peak']:.0%}" if r.get("fraction_of_peak") else "-"
            lines.append(f"{r['contender']:<14} {r['images_per_second']:>7.0f} "
                         f"{r['min']:>6.0f}-{r['max']:<6.0f} {r['ratio']:>10.2f}x"
                         + (f" {r['ratio_bf16']:>15.2f}x" if has16 else "")
                         + f" {r['gflops']:>8.0f} {frac:>7}")
        for k, v in m["notes"].items():
            lines.append(f"{k}: {v}")
        for k in ("eval_fp32", "eval_bf16"):
            if k in m:
                e = m[k]
                lines.append(f"{k}: {e['images']} test images in {e['seconds']:.2f} s")
    for t in result.get("time_to_accuracy", []):
        hit = t["reached"]
        where = {"epoch": "", "final": ", final test evaluation"}
        msg = (f"epoch {hit['epoch']}{where[hit['at']]}, {hit['wall_seconds']:.0f} s (acc {hit['acc']:.4f})"
               if hit else "not reached")
        lines.append(f"time to {t['target']:.2%}: {t['run']}: {msg}")
    return "\n".join(lines)
