"""Optimisers, weight decay in both forms, and learning-rate schedules as pure functions.

    opt = build_optimizer(model, cfg)
    lr_at = build_schedule(cfg, steps_per_epoch)   # step -> learning rate
    for step in ...:
        set_lr(opt, lr_at(step))
        ...
        loss = loss + l2_penalty(model, cfg.l2)     # Keras l2(c): c * sum(w^2) per kernel
        loss.backward(); decoupled_decay(opt); opt.step()
        lookahead.step(step, total_steps)           # optional: Lookahead(model, every=5), see below

Every schedule below is a plain function of the global step (0-based), so it can be
tested at known steps and a resumed run picks up exactly where it stopped.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# --- schedules ---------------------------------------------------------------------

def constant(step: int, lr: float) -> float:
    return lr


def piecewise(step: int, boundaries, values) -> float:
    """Keras PiecewiseConstantDecay: values[0] while step <= boundaries[0], and so on."""
    for b, v in zip(boundaries, values):
        if step <= b:
            return v
    return values[-1]


def cosine(step: int, lr: float, decay_steps: int, alpha: float = 0.0) -> float:
    """Keras CosineDecay: half a cosine from lr down to alpha * lr over decay_steps, then flat."""
    frac = min(step, decay_steps) / max(decay_steps, 1)
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)


def cosine_restarts(step: int, lr: float, first_steps: int, t_mul: float = 2.0, m_mul: float = 1.0,
                    alpha: float = 0.0) -> float:
    """Keras CosineDecayRestarts (SGDR): periods grow by t_mul, peaks shrink by m_mul."""
    frac = step / max(first_steps, 1)
    if t_mul == 1.0:
        i = math.floor(frac)
        frac -= i
    else:
        i = math.floor(math.log(1 - frac * (1 - t_mul)) / math.log(t_mul))
        done = (1 - t_mul ** i) / (1 - t_mul)
        frac = (frac - done) / t_mul ** i
    return lr * ((1 - alpha) * 0.5 * m_mul ** i * (1 + math.cos(math.pi * frac)) + alpha)


def warmup_cosine(step: int, lr: float, warmup: int, total: int, alpha: float = 0.0) -> float:
    """Linear warm-up from 0 to lr over `warmup` steps, then cosine down to alpha * lr at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return cosine(step - warmup, lr, total - warmup, alpha)


def warmup_linear(step: int, lr: float, warmup: int, total: int, alpha: float = 0.0) -> float:
    """Linear warm-up to lr, then linear decay to alpha * lr at `total` (the fast recipes' shape)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(step - warmup, total - warmup) / max(total - warmup, 1)
    return lr * (1 - (1 - alpha) * frac)


def onecycle(step: int, lr: float, total: int, pct: float = 0.3, div: float = 25.0,
             final_div: float = 1e4) -> float:
    """Smith's one-cycle (cosine phases, as torch's OneCycleLR): lr/div -> lr -> lr/(div*final_div)."""
    up = max(int(pct * total), 1)
    lo, hi, end = lr / div, lr, lr / (div * final_div)
    if step < up:
        return hi + (lo - hi) * 0.5 * (1 + math.cos(math.pi * step / up))
    frac = min(step - up, total - up) / max(total - up, 1)
    return end + (hi - end) * 0.5 * (1 + math.cos(math.pi * frac))


def build_schedule(cfg, steps_per_epoch: int):
    """The config's schedule as a function step -> learning rate."""
    total = cfg.epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    decay = round(cfg.decay_epochs * steps_per_epoch) or total
    a = cfg.min_lr_factor
    s = cfg.schedule
    if s == "constant":
        return lambda step: constant(step, cfg.lr)
    if s == "piecewise":
        scale = steps_per_epoch if cfg.boundary_unit == "epochs" else 1
        bounds = [b * scale for b in cfg.boundaries]
        return lambda step: piecewise(step, bounds, cfg.values)
    if s == "cosine":
        return lambda step: cosine(step, cfg.lr, decay, a)
    if s == "cosine_restarts":
        first = round(cfg.decay_epochs * steps_per_epoch) or steps_per_epoch * 10
        return lambda step: cosine_restarts(step, cfg.lr, first, cfg.restart_mult, 1.0, a)
    if s == "warmup_cosine":
        return lambda step: warmup_cosine(step, cfg.lr, max(warm, 1), total, a)
    if s == "warmup_linear":
        return lambda step: warmup_linear(step, cfg.lr, max(warm, 1), total, a)
    if s == "onecycle":
        return lambda step: onecycle(step, cfg.lr, total, cfg.onecycle_pct)
    raise ValueError(f"unknown schedule {s!r}")


# --- parameters, decay, optimisers -------------------------------------------------

def kernels(model: nn.Module) -> list[nn.Parameter]:
    """Regularised kernels: the model's own list, or every >=2-D weight but the output layer's."""
    if hasattr(model, "kernels"):
        return list(model.kernels())
    weights = [p for p in model.parameters() if p.ndim >= 2]
    return weights[:-1]


def decay_params(model: nn.Module, decay_on: str) -> list[nn.Parameter]:
    if decay_on == "kernels":
        return kernels(model)
    if decay_on == "weights":
        return [p for p in model.parameters() if p.ndim >= 2]
    return list(model.parameters())


def l2_penalty(model: nn.Module, c: float) -> torch.Tensor | float:
    """Keras `l2(c)` on every regularised kernel: c * sum(w^2), added to the loss."""
    if not c:
        return 0.0
    return c * sum(k.pow(2).sum() for k in kernels(model))


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """Two parameter groups: `decay` (the ones weight_decay touches) and `no_decay`.

    weight_decay is decoupled for every optimiser: each step multiplies the decayed
    weights by (1 - lr * weight_decay), as AdamW does (and as Keras's AdamW does).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    chosen = {id(p) for p in decay_params(model, cfg.decay_on)} if cfg.weight_decay else set()
    groups = [
        {"params": [p for p in params if id(p) in chosen], "weight_decay": cfg.weight_decay, "name": "decay"},
        {"params": [p for p in params if id(p) not in chosen], "weight_decay": 0.0, "name": "no_decay"},
    ]
    scale = getattr(cfg, "bias_lr_scale", 1.0)
    if scale != 1.0:
        # BatchNorm shifts move the activations' offsets only; the fast recipes let them learn
        # `scale` times faster (other biases, such as fast94's whitening bias, keep lr). Their
        # decoupled decay is divided by `scale` so that the per-step shrink lr * wd stays that
        # of the weights.
        biases = {id(m.bias) for m in model.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
        split = []
        for g in groups:
            fast = [p for p in g["params"] if id(p) in biases]
            slow = [p for p in g["params"] if id(p) not in biases]
            split.append({**g, "params": slow})
            split.append({**g, "params": fast, "name": g["name"] + "_bias", "lr_scale": scale,
                          "weight_decay": g["weight_decay"] / scale})
        groups = split
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        # Keras and torch momentum agree at constant lr: v = m*v + g; w -= lr*v.
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              foreach=True)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=True)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of: sgd, adam, adamw")
    if cfg.optimizer != "adamw":
        # torch's SGD/Adam weight_decay is an L2 gradient term; ours is decoupled (see decoupled_decay).
        for g in opt.param_groups:
            g["decoupled_decay"], g["weight_decay"] = g["weight_decay"], 0.0
    return opt


@torch.no_grad()
def decoupled_decay(opt: torch.optim.Optimizer) -> None:
    """w <- w * (1 - lr * wd) for SGD and Adam groups (AdamW does this itself).

    A parameter without a gradient this step (frozen for now) is left alone, as the optimiser leaves it.
    """
    for g in opt.param_groups:
        wd = g.get("decoupled_decay", 0.0)
        if not wd:
            continue
        params = [p for p in g["params"] if p.grad is not None]
        if params:
            torch._foreach_mul_(params, 1.0 - g["lr"] * wd)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


# --- Lookahead --------------------------------------------------------------------

def lookahead_decay(step: int, total: int, decay: float = 0.95, every: int = 5) -> float:
    """How much of the slow weights a Lookahead sync keeps at `step`: decay**every scaled by
    (step/total)^3, so early syncs follow the fast weights and late ones average strongly."""
    return decay ** every * (min(step, total) / max(total, 1)) ** 3


class Lookahead:
    """Slow copies of a model's parameters and float buffers (BN statistics included).

        la = Lookahead(model, every=5)
        ... after each opt.step():  la.step(step, total_steps)
        la.finish()                  # the model takes the slow weights for evaluation

    Every `every` steps: slow <- decay * slow + (1 - decay) * fast, then fast <- slow. The
    slow weights are an average over the noisy end of training that the fast ones keep
    restarting from. state_dict/load_state_dict make a resumed run exact.
    """

    def __init__(self, model: nn.Module, every: int = 5, decay: float = 0.95):
        self.every, self.decay = every, decay
        self.tensors = [t for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def sync(self, decay: float) -> None:
        fast = [t.detach() for t in self.tensors]
        torch._foreach_lerp_(self.slow, fast, 1.0 - decay)
        torch._foreach_copy_(fast, self.slow)

    def step(self, step: int, total: int) -> None:
        """Call after the optimiser's step number `step` (0-based) of `total`."""
        if (step + 1) % self.every == 0:
            self.sync(lookahead_decay(step + 1, total, self.decay, self.every))

    def finish(self) -> None:
        self.sync(1.0)  # keep the slow weights as they are; the model takes them

    def state_dict(self) -> dict:
        return {"slow": [t.clone() for t in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        for t, s in zip(self.slow, state["slow"], strict=True):
            t.copy_(s)
