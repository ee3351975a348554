"""The compute of a training run, apart from its lifecycle (train.py: folder, resume, checkpoint,
summary): the device and precision policy, the data on the device, the model and optimiser,
the batch, the step, the running totals of an epoch and the evaluation.

    from cifarlab.config import load_preset
    from cifarlab import engine
    cfg = load_preset("vgg3")
    device = engine.pick_device(cfg.device)
    amp = engine.use_arithmetic(cfg, device)
    data = engine.prepare_data(cfg, device)
    model, fwd, opt = engine.build_training(cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    xb, yb = engine.make_batch(data, torch.arange(cfg.batch_size), cfg, gen)
    loss, logits = engine.train_step(model, fwd, opt, xb, yb, cfg, cfg.lr, amp)
    engine.evaluate(model, data.x_test, data.y_test, data.mean, data.std, amp=amp)["acc"]

Everything here is a pure function of its arguments and torch's state: no files, no logging.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .augment import augment_batch, normalize, tta_logits
from .config import Config
from .data import load_cifar10, stratified_split, subset_indices
from .errors import CifarlabError
from .machine import busy_cores, cpu_bf16_faster, cpu_bf16_units, cpu_name
from .models import build_model
from .optim import build_optimizer, decoupled_decay, l2_penalty, set_lr


class DeviceError(CifarlabError, RuntimeError):
    """A device this machine does not have."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name} asked for CUDA, but torch sees no GPU; use device=cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device={name}: this machine has {torch.cuda.device_count()} GPU(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def bf16_units(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic of its own (faster or not), not emulation."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16_units()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 is the faster arithmetic on `device`: a CUDA GPU with bf16, or a CPU where
    it measured faster than fp32 (AMX, or AMD's AVX-512 BF16: machine.cpu_bf16_faster)."""
    return bf16_units(device) and (device.type == "cuda" or cpu_bf16_faster())


def amp_dtype(cfg: Config, device: torch.device):
    """The autocast dtype of a run, or None for fp32 throughout: `auto` is bf16 on a CUDA device
    with bf16 units and fp32 elsewhere (an older GPU, any CPU)."""
    if cfg.amp == "off" or (cfg.amp == "auto" and not (device.type == "cuda" and bf16_units(device))):
        return None
    if cfg.amp == "native" and not native_bf16(device):
        return None
    if cfg.amp == "fp16":
        return torch.float16
    return torch.bfloat16


def use_arithmetic(cfg: Config, device: torch.device):
    """amp_dtype(cfg, device), with fp32 kept fp32: on GPUs with TF32 units (Ampere and later)
    cuDNN computes fp32 convolutions in TF32 (a 10-bit mantissa) unless told not to, so a run
    without autocast turns TF32 off for convolutions and matrix products, and a run with it
    leaves torch's defaults. Process-wide settings: every run and measurement sets its own."""
    amp = amp_dtype(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = amp is not None
        torch.backends.cuda.matmul.allow_tf32 = False  # torch's default; a bf16 run's matmuls are bf16
    return amp


def arithmetic_name(amp) -> str:
    """fp32, bf16 or fp16: what the convolutions and matrix products of a run computed in."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


@dataclass
class Data:
    """The run's splits as uint8/int64 tensors on the training device, plus normalisation."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor  # per channel, 0-1 scale
    std: torch.Tensor
    val_is_test: bool


def prepare_data(cfg: Config, device: torch.device, data_path=None) -> Data:
    ds = load_cifar10(data_path)
    idx = np.arange(len(ds.y_train))
    if cfg.subset:
        idx = subset_indices(ds.y_train, cfg.subset, cfg.seed)
    x_val = y_val = None
    if cfg.val_split:
        keep, hold = stratified_split(ds.y_train[idx], cfg.val_split, cfg.seed)
        x_val, y_val = ds.x_train[idx[hold]], ds.y_train[idx[hold]]
        idx = idx[keep]
    x_tr, y_tr = ds.x_train[idx], ds.y_train[idx]
    if cfg.norm == "standardize":  # statistics of the images actually trained on
        flat = x_tr.transpose(1, 0, 2, 3).reshape(3, -1)
        mean = flat.mean(1, dtype=np.float64) / 255
        std = flat.std(1, dtype=np.float64) / 255
    else:
        mean, std = np.zeros(3), np.ones(3)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    x_test, y_test = t(ds.x_test), t(ds.y_test)
    return Data(t(x_tr), t(y_tr), t(x_val) if x_val is not None else x_test,
                t(y_val) if y_val is not None else y_test, x_test, y_test,
                torch.tensor(mean, dtype=torch.float32, device=device),
                torch.tensor(std, dtype=torch.float32, device=device), val_is_test=x_val is None)


def layout(v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return v.contiguous(memory_format=torch.channels_last) if channels_last else v


@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int = 1000,
             channels_last: bool = True, amp=None, tta: int = 0) -> dict:
    """Loss and accuracy over (x, y); returns also the logits (float32, CPU).

    tta (0, 1, 2; see augment.tta_views) averages the probabilities of several views of each image."""
    was_training = model.training
    model.eval()
    logits = []
    for i in range(0, len(x), batch_size):
        xb = normalize(x[i:i + batch_size], mean, std)
        with torch.autocast(xb.device.type, dtype=amp, enabled=amp is not None):
            logits.append(tta_logits(lambda v: model(layout(v, channels_last)).float(), xb, tta))
    model.train(was_training)
    logits = torch.cat(logits)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return {"loss": loss, "acc": acc, "logits": logits.cpu()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def free_threads(share: int, busy: float | None) -> int:
    """Of `share` cores, those that `busy` cores of other work leave free, at least one: a thread
    more than the free cores waits for a core at every step's barrier (a 2-thread run beside one
    busy process trained at 0.4x-0.55x of one thread, benchmarks/README.md)."""
    if busy is None:
        return share
    return max(1, min(share, (os.cpu_count() or 1) - round(busy)))


def setup_threads(cfg: Config, threads: int | None = None, kept: int | None = None) -> str:
    """Set torch's CPU threads: the config's `threads`, else the share given (a study worker's),
    else the count the run was started with (`kept`, on a resume: the count changes the order of
    fp32 sums, so a resumed run keeps it to stay the run it was), else this process's share of the
    cores less those other work keeps busy now. Returns a line saying why, when the count is not
    the one set or the whole share ("" otherwise)."""
    if cfg.threads or threads:
        torch.set_num_threads(cfg.threads or threads)
        return ""
    share = distributed.cores_per_process()
    if kept:
        torch.set_num_threads(kept)
        return "" if kept == share else f"{kept} CPU thread{'s' if kept > 1 else ''}: the run's own, kept on resume"
    busy = busy_cores() if share > 1 and distributed.local_world_size() == 1 else None
    n = free_threads(share, busy)
    torch.set_num_threads(n)
    if n == share:
        return ""
    return (f"{n} CPU thread{'s' if n > 1 else ''} of {share}: other work keeps {busy:.1f} cores busy "
            f"(threads=N fixes the count)")


def threads_of(segments: list[dict]) -> int | None:
    """The CPU threads a run was started with, from its first segment (None: not recorded, or not a CPU run)."""
    if not segments:
        return None
    first = segments[0]
    if "threads" in first:
        return first["threads"]
    m = re.search(r", (\d+) threads\)$", str(first.get("device", "")))  # segments before `threads` was a field
    return int(m.group(1)) if m else None


def build_training(cfg: Config, device: torch.device):
    """The model on `device` in the config's memory format, its forward (compiled or not), its optimiser."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotuned conv algorithms pay back at once
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if cfg.compile else model
    return model, fwd, build_optimizer(model, cfg)


def grad_scaler(amp, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 runs scale the loss so that small gradients do not underflow to zero in fp16;
    bf16 (fp32's range) and fp32 runs need no scaler."""
    return torch.amp.GradScaler(device.type) if amp == torch.float16 else None


def make_batch(data: Data, idx: torch.Tensor, cfg: Config, gen: torch.Generator, flip_mask=None):
    """The training batch at `idx`: augmented, normalised, in the config's memory format.

    flip_mask: which of these images to mirror (alt_flip), instead of a coin toss."""
    xb = augment_batch(data.x_train[idx], cfg.augment, gen, cfg.shift, cfg.crop_pad, flip_mask)
    xb = normalize(xb, data.mean, data.std)
    if cfg.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb, data.y_train[idx]


def train_step(model, fwd, opt, xb: torch.Tensor, yb: torch.Tensor, cfg: Config, lr: float, amp=None,
               scaler: torch.amp.GradScaler | None = None):
    """One optimiser step: learning rate, forward, loss, backward, decay, step.

    `fwd` is the model or its compiled form. With a `scaler` (fp16), the loss is scaled
    before backward, the gradients are unscaled before the decay and the step, and a step
    whose gradients overflowed is skipped by the scaler (the decoupled decay still shrinks
    the weights on it). Returns the loss (with any L2 term) and the logits, both detached
    and left on the device: reading them is the caller's host sync.
    """
    set_lr(opt, lr)
    with torch.autocast(xb.device.type, dtype=amp, enabled=amp is not None):
        out = fwd(xb)
        loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
    total = loss + l2_penalty(model, cfg.l2)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        total.backward()
        decoupled_decay(opt)
        opt.step()
    else:
        scaler.scale(total).backward()
        scaler.unscale_(opt)
        decoupled_decay(opt)
        scaler.step(opt)
        scaler.update()
    return total.detach(), out.detach()


class Totals:
    """Training loss and accuracy summed over an epoch's batches, on the device (no host sync per step)."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0
        self.steps = 0
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)  # the first non-finite step's index

    @torch.no_grad()
    def add(self, total: torch.Tensor, out: torch.Tensor, yb: torch.Tensor) -> None:
        self.loss_sum += total * len(yb)
        self.correct += (out.argmax(1) == yb).sum()
        self.seen += len(yb)
        bad = (self.first_bad < 0) & ~torch.isfinite(total)
        self.first_bad = torch.where(bad, self.steps, self.first_bad)
        self.steps += 1

    def diverged(self) -> int | None:
        """The 0-based index (in this epoch) of the first step whose loss was not finite, None while
        every loss was: a host sync, so read only every so many steps and at the epoch's end."""
        k = int(self.first_bad.item())
        return k if k >= 0 else None

    def running_loss(self) -> float:
        """The epoch's mean loss so far: a host sync, so read only when shown or logged."""
        return self.loss_sum.item() / self.seen
