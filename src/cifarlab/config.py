"""One typed config for a run, presets as YAML files, and `key=value` overrides.

    from cifarlab.config import load_preset, apply_overrides
    cfg = load_preset("vgg3")
    cfg = apply_overrides(cfg, ["epochs=2", "lr=0.01"])

A preset file sets any of the fields below, plus `base: OTHER` to start from another
preset, and `reference:` (the accuracies the study published) as data. An unknown
key or an unsupported choice is an error that lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad config key, value or preset; the message lists what is valid."""


@dataclass
class Config:
    name: str = "custom"
    description: str = ""
    reference: dict = field(default_factory=dict)  # published test accuracies (%), e.g. {seed_report: 73.81}

    # network
    model: str = "vgg"  # vgg: the study's family; fast94: the fast recipe's net (fastnet.py)
    blocks: int = 3  # VGG blocks: conv-conv-pool each
    widths: list = field(default_factory=lambda: [32, 64, 128])  # filters per block
    dense: int = 128  # hidden units of the head
    dropout: float | list = 0.0  # one rate, or one per position: after each pool, then after the dense layer
    batchnorm: bool = False  # BN after every conv's ReLU and after the dense layer's ReLU
    bn_dropout_order: str = "bn_first"  # bn_first (the study's combined) or swapped (Dropout where BN was, BN where Dropout was)
    whiten: bool = True  # fast94: first layer = frozen 2x2 patch whitening from the training images (false: a trained conv)
    whiten_bias_epochs: int = 3  # fast94: train the whitening bias only in the first N epochs (0: always)
    bn_freeze_weight: bool = True  # fast94: BN scales fixed at 1 (false: trained)

    # data
    norm: str = "scale"  # scale: x/255; standardize: per-channel mean and std of the training images
    augment: str = "none"  # none, shift_flip (Keras ImageDataGenerator), crop_flip, flip
    alt_flip: bool = False  # flip, crop_flip: each image mirrored on alternate epochs (a seeded half starts mirrored) instead of by coin toss
    shift: float = 0.1  # shift_flip: max shift as a fraction of the side (Keras width/height_shift_range)
    crop_pad: int = 4  # crop_flip: reflect padding in pixels
    subset: int = 0  # train on a class-balanced subset of this many images (0: all)
    val_split: int = 0  # hold out this many training images for validation (0: the test set validates, as in the study)
    drop_last: bool = False  # drop the last partial batch (Keras generators do: int(50000/64) = 781 steps)

    # optimisation
    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd, adam, adamw
    lr: float = 0.001  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW
    eps: float = 1e-7  # Adam/AdamW epsilon (Keras default 1e-7; PyTorch's is 1e-8)
    l2: float = 0.0  # Keras l2(c): adds c * sum(w^2) of each regularised kernel to the loss
    weight_decay: float = 0.0  # decoupled decay (AdamW; SGD's own weight_decay when optimizer=sgd)
    decay_on: str = "weights"  # which parameters weight_decay touches: kernels (convs + hidden dense), weights (every >=2-D weight), all
    label_smoothing: float = 0.0
    bias_lr_scale: float = 1.0  # BatchNorm shifts learn at this times lr; their decoupled decay is divided by it
    lookahead_every: int = 0  # Lookahead: every N steps pull slow weights toward the fast ones and restart from them (0: off)
    lookahead_decay: float = 0.95  # Lookahead: per-step decay, ramped up as (step/total)^3 (see optim.lookahead_decay)

    # learning-rate schedule, a pure function of the step (see optim.py)
    schedule: str = "constant"  # constant, piecewise, cosine, cosine_restarts, warmup_cosine, warmup_linear, onecycle
    boundaries: list = field(default_factory=list)  # piecewise: where the rate changes
    values: list = field(default_factory=list)  # piecewise: len(boundaries)+1 rates
    boundary_unit: str = "steps"  # piecewise: boundaries in steps or epochs
    warmup_epochs: float = 0.0  # warmup_*: linear warm-up length
    decay_epochs: float = 0.0  # cosine: decay length (0: the whole run); cosine_restarts: first period
    restart_mult: float = 2.0  # cosine_restarts: each period is this times the last (Keras t_mul)
    min_lr_factor: float = 0.0  # final rate as a fraction of lr (Keras alpha)
    onecycle_pct: float = 0.3  # onecycle: fraction of the run spent rising

    # run
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:1, ...
    threads: int = 0  # CPU threads for torch (0: all cores)
    channels_last: bool = True  # memory format; faster convolutions on CPU and GPU
    amp: str = "auto"  # auto (bf16 on CUDA when supported, off on CPU), native (bf16 on CUDA and on CPUs with AVX-512 BF16/AMX, else off), off, bf16, fp16
    compile: bool = False  # torch.compile the model
    eval_batch_size: int = 1000
    tta: int = 0  # test-time augmentation: 0 none, 1 mirror (2 views), 2 mirror and 1-pixel translations (6 views)
    test: bool = True  # measure the test set at the end (false for tuning runs, which must not see it)
    checkpoint_every: int = 1  # epochs between checkpoints
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (GPUs only), not per rank
    comparable: bool = True  # False once epochs/subset are scaled away from the preset (set by cifarlab)


CHOICES = {
    "model": ("vgg", "fast94"),
    "bn_dropout_order": ("bn_first", "swapped"),
    "norm": ("scale", "standardize"),
    "augment": ("none", "shift_flip", "crop_flip", "flip"),
    "optimizer": ("sgd", "adam", "adamw"),
    "decay_on": ("kernels", "weights", "all"),
    "schedule": ("constant", "piecewise", "cosine", "cosine_restarts", "warmup_cosine", "warmup_linear",
                 "onecycle"),
    "boundary_unit": ("steps", "epochs"),
    "amp": ("auto", "native", "off", "bf16", "fp16"),
}

FIELDS = {f.name: f for f in fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _check_type(key: str, value):
    """Coerce `value` to the field's type or raise ConfigError."""
    hint = _HINTS[key]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in allowed:
        t = typing.get_origin(t) or t
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if t is bool and isinstance(value, bool):
            return value
        if t is str and isinstance(value, str):
            return value
        if t is list and isinstance(value, (list, tuple)):
            return list(value)
        if t is dict and isinstance(value, dict):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{key}={value!r}: expected {names}")


def validate(cfg: Config) -> Config:
    for key, options in CHOICES.items():
        if getattr(cfg, key) not in options:
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is not a valid choice; "
                              f"choose one of: {', '.join(options)}")
    positions = cfg.blocks + 1
    if isinstance(cfg.dropout, list) and len(cfg.dropout) != positions:
        raise ConfigError(f"dropout has {len(cfg.dropout)} rates; {cfg.blocks} blocks need {positions} "
                          f"(one after each pool, one after the dense layer) or a single rate")
    if len(cfg.widths) < cfg.blocks:
        raise ConfigError(f"widths {cfg.widths} name fewer filters than blocks={cfg.blocks}")
    if cfg.schedule == "piecewise" and len(cfg.values) != len(cfg.boundaries) + 1:
        raise ConfigError("piecewise schedule needs len(values) == len(boundaries) + 1")
    if not cfg.test and not cfg.val_split:
        raise ConfigError("test=false needs val_split > 0: without a held-out split the test set validates")
    if cfg.tta not in (0, 1, 2):
        raise ConfigError(f"tta={cfg.tta} is not a valid choice; choose one of: 0, 1, 2")
    if cfg.bias_lr_scale <= 0 or cfg.lookahead_every < 0:
        raise ConfigError("bias_lr_scale must be > 0 and lookahead_every >= 0")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("epochs and batch_size must be at least 1")
    return cfg


def from_dict(d: dict, base: Config | None = None) -> Config:
    cfg = dataclasses.replace(base) if base else Config()
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                          f"Valid keys: {', '.join(FIELDS)}")
    for k, v in d.items():
        setattr(cfg, k, _check_type(k, v))
    return validate(cfg)


def to_dict(cfg: Config) -> dict:
    return asdict(cfg)


# --- presets ---------------------------------------------------------------------------

def preset_names() -> list[str]:
    folder = resources.files("cifarlab") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _preset_text(name: str) -> str:
    path = resources.files("cifarlab") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return path.read_text()


def load_preset(name: str) -> Config:
    d = yaml.safe_load(_preset_text(name)) or {}
    base = load_preset(d.pop("base")) if "base" in d else None
    d.setdefault("name", name)
    # A derived preset gets its own references, not its base's.
    d.setdefault("reference", {})
    return from_dict(d, base)


def load_file(path: str | Path) -> Config:
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    base = load_preset(d.pop("base")) if "base" in d else None
    d.setdefault("name", path.stem)
    return from_dict(d, base)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        key = key.strip().lstrip("-")
        if key not in FIELDS:
            raise ConfigError(f"unknown config key: {key}. Valid keys: {', '.join(FIELDS)}")
        if _HINTS[key] is str:
            # a text field takes the text as typed: YAML would read amp=off as False
            value = raw.strip().strip("'\"")
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
        out[key] = value
    return out


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    return from_dict(parse_overrides(items), cfg)
