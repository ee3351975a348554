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
import math
import os
import re
import stat
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from .errors import CifarlabError


class ConfigError(CifarlabError, ValueError):
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
    # bn_first (the study's combined) or swapped (Dropout where BN was, BN where Dropout was)
    bn_dropout_order: str = "bn_first"
    # fast94: first layer = frozen 2x2 patch whitening from the training images (false: a trained conv)
    whiten: bool = True
    whiten_bias_epochs: int = 3  # fast94: train the whitening bias only in the first N epochs (0: always)
    bn_freeze_weight: bool = True  # fast94: BN scales fixed at 1 (false: trained)

    # data
    norm: str = "scale"  # scale: x/255; standardize: per-channel mean and std of the training images
    augment: str = "none"  # none, shift_flip (Keras ImageDataGenerator), crop_flip, flip
    # flip, crop_flip: each image mirrored on alternate epochs (a seeded half starts mirrored) instead of by coin toss
    alt_flip: bool = False
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
    weight_decay: float = 0.0  # decoupled decay for every optimiser: each step shrinks weights by lr * weight_decay
    # which parameters weight_decay touches: kernels (convs + hidden dense), weights (every >=2-D weight), all
    decay_on: str = "weights"
    label_smoothing: float = 0.0
    bias_lr_scale: float = 1.0  # BatchNorm shifts learn at this times lr; their decoupled decay is divided by it
    # Lookahead: every N steps pull slow weights toward the fast ones and restart from them (0: off)
    lookahead_every: int = 0
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
    # CPU threads for torch (0: this process's share of the cores less those other work keeps busy
    # when the run starts, kept on resume; a study worker's share)
    threads: int = 0
    channels_last: bool = True  # memory format; faster convolutions on CPU and GPU
    # auto (bf16 on a CUDA device with bf16 units, else off), native (bf16 where it is the faster arithmetic:
    # such a GPU, a CPU with AMX or AMD's AVX-512 BF16; else off), off, bf16, fp16 (with loss scaling;
    # emulated, and slow, on CPUs)
    amp: str = "auto"
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
# list keys whose elements are real numbers: an element written as text ("1e-3") is read as one
NUMBER_LISTS = ("dropout", "betas", "boundaries", "values")


def _text_number(v):
    """A list element written as text that reads as a number, as that float; anything else as it is
    (validation then names the element)."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def check_type(key: str, value):
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
            if key in NUMBER_LISTS:  # "1e-3" inside a list is text to YAML 1.1 too
                return [_text_number(v) for v in value]
            return list(value)
        if t is dict and isinstance(value, dict):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{key}={value!r}: expected {names}")


TRAIN_IMAGES = 50_000  # CIFAR-10's training set
CLASS_COUNT = 10
SIDE = 32  # CIFAR-10 images are 32x32 pixels

# Keys that shape one network family only; set on the other family they would be ignored.
MODEL_KEYS = {
    "vgg": ("blocks", "dense", "dropout", "batchnorm", "bn_dropout_order"),
    "fast94": ("whiten", "whiten_bias_epochs", "bn_freeze_weight"),
}
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEFAULTS = Config()

# Upper bounds, so that a value far past any useful one is refused here and not by a crash mid-run:
MAX_SEED = 2**31 - 1  # torch's generators take seed * 100_003 + epoch, which must stay below 2^64
MAX_LR = 100.0  # a peak rate (or a piecewise value) above this only diverges; float32 overflows near 3e38
MAX_WIDTH = 4096  # filters per block
MAX_DENSE = 65536  # hidden units of the head
MAX_EPOCHS = 100_000
MAX_THREADS = 1024
MAX_NAME_BYTES = 200  # the run folder's name is NAME-TIMESTAMP; file names stop at 255 bytes
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few lines of YAML


def _number(key: str, value, low=None, high=None, low_open=False, high_open=False, what=None) -> None:
    """Refuse a value outside [low, high] (an open end excludes the bound); NaN and infinities too."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if what is None:
            lo = "" if low is None else f"{'above' if low_open else 'at least'} {low:g}"
            hi = "" if high is None else f"{'below' if high_open else 'at most'} {high:g}"
            what = "a finite number" + (f" {lo}" if lo else "") + (" and" if lo and hi else "") + \
                   (f" {hi}" if hi else "")
        raise ConfigError(f"{key}={value!r}: must be {what}")


def _whole(key: str, value, low: int = 0, high=None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        rng = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ConfigError(f"{key}={value!r}: must be a whole number {rng}")


def _items(key: str, values: list, check) -> None:
    """Check each element of a list setting; the error names the position."""
    for i, v in enumerate(values):
        try:
            check(f"{key}[{i}]", v)
        except ConfigError as e:
            raise ConfigError(f"{e} (in {key}={values!r})") from None


def train_images(cfg: Config) -> int:
    """How many images a run trains on: the class-balanced subset (a multiple of 10), less the held-out split."""
    pool = cfg.subset - cfg.subset % CLASS_COUNT if cfg.subset else TRAIN_IMAGES
    return pool - cfg.val_split


def validate(cfg: Config) -> Config:
    """Refuse a config that could not train as written, naming the key and what is allowed.

    Runs on every config before anything is created on disk: types of list elements,
    lengths that must match the network, ranges, data sizes that leave a training batch,
    the device, and keys that do not apply to the chosen network.
    """
    for key, options in CHOICES.items():
        if getattr(cfg, key) not in options:
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is not a valid choice; "
                              f"choose one of: {', '.join(options)}")
    # the network
    other = [m for m in MODEL_KEYS if m != cfg.model]
    for m in other:
        for key in MODEL_KEYS[m]:
            if getattr(cfg, key) != getattr(_DEFAULTS, key):
                own = ", ".join(("widths",) + MODEL_KEYS[cfg.model])
                raise ConfigError(f"{key}={getattr(cfg, key)!r} applies to model={m} only; model={cfg.model} "
                                  f"takes {own} for its network (remove {key}, or set model={m})")
    _items("widths", cfg.widths, lambda k, v: _whole(k, v, 1, MAX_WIDTH))
    if cfg.model == "vgg":
        _whole("blocks", cfg.blocks, 1, 5)  # five poolings take 32x32 down to 1x1
        if len(cfg.widths) < cfg.blocks:
            raise ConfigError(f"widths={cfg.widths} names fewer filters than blocks={cfg.blocks}; "
                              f"give one width per block")
        _whole("dense", cfg.dense, 1, MAX_DENSE)
        positions = cfg.blocks + 1
        if isinstance(cfg.dropout, list):
            if len(cfg.dropout) != positions:
                raise ConfigError(f"dropout has {len(cfg.dropout)} rates; {cfg.blocks} blocks need {positions} "
                                  f"(one after each pool, one after the dense layer) or a single rate")
            _items("dropout", cfg.dropout, lambda k, v: _number(k, v, 0, 1, high_open=True))
        else:
            _number("dropout", cfg.dropout, 0, 1, high_open=True)
    else:
        if len(cfg.widths) != 3:
            raise ConfigError(f"widths={cfg.widths}: model=fast94 has three conv groups, give three widths")
        _whole("whiten_bias_epochs", cfg.whiten_bias_epochs, 0)
    # the data
    _number("shift", cfg.shift, 0, 1, high_open=True)
    _whole("crop_pad", cfg.crop_pad, 0, SIDE // 2)
    _whole("subset", cfg.subset, 0, TRAIN_IMAGES)
    if 0 < cfg.subset < CLASS_COUNT:
        raise ConfigError(f"subset={cfg.subset}: a class-balanced subset needs at least {CLASS_COUNT} images "
                          f"(0: all {TRAIN_IMAGES:,})")
    _whole("val_split", cfg.val_split, 0)
    if cfg.val_split % CLASS_COUNT:
        raise ConfigError(f"val_split={cfg.val_split}: must be a multiple of {CLASS_COUNT} (one share per class)")
    _whole("epochs", cfg.epochs, 1, MAX_EPOCHS)
    _whole("batch_size", cfg.batch_size, 1, TRAIN_IMAGES)
    n = train_images(cfg)
    pool = f"subset={cfg.subset}" if cfg.subset else f"the {TRAIN_IMAGES:,} training images"
    if n < 1:
        raise ConfigError(f"val_split={cfg.val_split} holds out all of {pool}, leaving nothing to train on; "
                          f"use a smaller val_split or a larger subset")
    if cfg.drop_last and n < cfg.batch_size:
        raise ConfigError(f"{n} training images ({pool}, val_split={cfg.val_split}) make no full batch of "
                          f"batch_size={cfg.batch_size} with drop_last=true; train on more images, use a "
                          f"smaller batch_size or drop_last=false")
    if not cfg.test and not cfg.val_split:
        raise ConfigError("test=false needs val_split > 0: without a held-out split the test set validates")
    # the optimiser
    _number("lr", cfg.lr, 0, MAX_LR, low_open=True)
    _number("momentum", cfg.momentum, 0, 1, high_open=True)
    if cfg.optimizer == "sgd" and cfg.nesterov and cfg.momentum == 0:
        raise ConfigError("nesterov=true needs momentum above 0 (Nesterov's step is a look-ahead along the "
                          "momentum); set momentum, e.g. momentum=0.9, or nesterov=false")
    if not (isinstance(cfg.betas, list) and len(cfg.betas) == 2):
        raise ConfigError(f"betas={cfg.betas!r}: must be two numbers, e.g. [0.9, 0.999]")
    _items("betas", cfg.betas, lambda k, v: _number(k, v, 0, 1, high_open=True))
    _number("eps", cfg.eps, 0, 1, low_open=True)
    _number("l2", cfg.l2, 0, 10)
    _number("weight_decay", cfg.weight_decay, 0, 10)
    _number("label_smoothing", cfg.label_smoothing, 0, 1, high_open=True)
    _number("bias_lr_scale", cfg.bias_lr_scale, 0, 1000, low_open=True)
    _whole("lookahead_every", cfg.lookahead_every, 0)
    _number("lookahead_decay", cfg.lookahead_decay, 0, 1)
    # the schedule
    if cfg.schedule == "piecewise" and len(cfg.values) != len(cfg.boundaries) + 1:
        raise ConfigError(f"the piecewise schedule needs one more value than boundaries; "
                          f"got {len(cfg.values)} values and {len(cfg.boundaries)} boundaries")
    _items("boundaries", cfg.boundaries, lambda k, v: _number(k, v, 0))
    if any(b >= a for a, b in zip(cfg.boundaries[1:], cfg.boundaries)):
        raise ConfigError(f"boundaries={cfg.boundaries}: must increase")
    _items("values", cfg.values, lambda k, v: _number(k, v, 0, MAX_LR))
    _number("warmup_epochs", cfg.warmup_epochs, 0)
    _number("decay_epochs", cfg.decay_epochs, 0)
    # each period is restart_mult times the last: below 1 they shrink, and the periods' sum ends the schedule
    # partway (optim.cosine_restarts takes the log of a negative number there)
    _number("restart_mult", cfg.restart_mult, 1, what="a finite number at least 1 (1: equal periods; "
            "2: each twice the last)")
    _number("min_lr_factor", cfg.min_lr_factor, 0, 1)
    _number("onecycle_pct", cfg.onecycle_pct, 0, 1, low_open=True, high_open=True)
    # the run
    _whole("seed", cfg.seed, 0, MAX_SEED)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device={cfg.device!r} is not a device cifarlab trains on; use {DEVICE_FORMS}")
    if cfg.sync_bn and cfg.device == "cpu":
        raise ConfigError("sync_bn=true needs GPUs: torch's SyncBatchNorm does not run on the CPU; "
                          "use sync_bn=false (or a cuda device under torchrun)")
    _whole("threads", cfg.threads, 0, MAX_THREADS)
    _whole("eval_batch_size", cfg.eval_batch_size, 1, TRAIN_IMAGES)
    if cfg.tta not in (0, 1, 2):
        raise ConfigError(f"tta={cfg.tta} is not a valid choice; choose one of: 0, 1, 2")
    _whole("checkpoint_every", cfg.checkpoint_every, 1)
    # the notes
    for key in ("name", "description"):
        _text(key, getattr(cfg, key))
    _name(cfg.name)
    for k, v in cfg.reference.items():
        if not isinstance(k, str) or not k:
            raise ConfigError(f"reference key {k!r}: name the source of each accuracy, e.g. "
                              f"reference: {{seed_report: 73.81}}")
        _number(f"reference.{k}", v, 0, 100, what="a test accuracy in percent, from 0 to 100")
    return cfg


def _text(key: str, value: str) -> None:
    """Text that a run writes into its files and figures must be UTF-8 (a byte that is not decodes to a
    lone surrogate on the command line)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(f"{key}={value!r}: not UTF-8 text (character {e.start}); write it in UTF-8") from None


def _name(name: str) -> None:
    """The name becomes the default run folder runs/NAME-TIMESTAMP: one plain file name."""
    if not name or name in (".", "..") or re.search(r"[/\\\x00-\x1f\x7f]", name):
        raise ConfigError(f"name={name!r}: must be a plain file name (no /, \\ or control characters); "
                          f"the run folder is runs/NAME-TIMESTAMP, and --out puts a run anywhere")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError(f"name is {len(name.encode('utf-8'))} bytes long: at most {MAX_NAME_BYTES} "
                          f"(it names the run folder)")


def from_dict(d: dict, base: Config | None = None, check: bool = True) -> Config:
    """`base` (default: the defaults) with the keys of `d`, type-checked; `check`: validated as a whole too."""
    cfg = dataclasses.replace(base) if base else Config()
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                          f"Valid keys: {', '.join(FIELDS)}")
    for k, v in d.items():
        setattr(cfg, k, check_type(k, v))
    return validate(cfg) if check else cfg


def to_dict(cfg: Config) -> dict:
    return asdict(cfg)


# --- presets ---------------------------------------------------------------------------

# The study's experiment table, in its order; presets outside it follow, by name.
STUDY_ORDER = ["vgg1", "vgg2", "vgg3", "dropout", "weight_decay", "augmentation", "increasing_dropout",
               "dropout_augmentation", "combined", "centered", "adam", "adamw", "cosine", "cosine_restarts",
               "step_decay", "warmup_cosine", "bn_dropout_swapped", "bn_only", "dropout_only"]


def study_order(names) -> list[str]:
    """`names` (each once) in the study's order, then the others by name."""
    rank = {n: i for i, n in enumerate(STUDY_ORDER)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


def preset_names() -> list[str]:
    folder = resources.files("cifarlab") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _preset_text(name: str) -> str:
    # only the names listed: a path (../x) or an empty name is no preset
    if not isinstance(name, str) or name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return (resources.files("cifarlab") / "presets" / f"{name}.yaml").read_text()


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # a list or mapping as key: the caller names it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {first + 1} and {key_node.start_mark.line + 1}); "
                                f"keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str, where: str):
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def _check_mapping(d, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a config file holds `key: value` lines, but this one holds a "
                          f"{type(d).__name__}; see `cifarlab presets` and src/cifarlab/presets/*.yaml")
    odd = [k for k in d if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{where}: key {odd[0]!r} is not a setting's name; keys are names such as lr or "
                          f"epochs (see `cifarlab presets`)")
    if "base" in d and not isinstance(d["base"], str):
        raise ConfigError(f"{where}: base={d['base']!r} must be a preset name")
    return d


def from_saved(d, where) -> Config:
    """The config a run saved into a file (its checkpoint); one that is not a valid config is a
    ConfigError naming that file."""
    try:
        if not isinstance(d, dict):
            raise ConfigError(f"it holds a {type(d).__name__}, not key: value settings")
        return from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{where}: its saved config is not valid ({e}); the file was edited or damaged: "
                          f"restore it from a copy, or train the run again") from None


def load_preset(name: str, _chain: tuple = ()) -> Config:
    if name in _chain:
        raise ConfigError(f"preset {_chain[0]!r}: its bases form a cycle ({' -> '.join(_chain + (name,))}); "
                          f"a preset's base must lead to one without a base")
    d = _check_mapping(_parse_yaml(_preset_text(name), f"preset {name}"), f"preset {name}")
    base = load_preset(d.pop("base"), _chain + (name,)) if "base" in d else None
    d.setdefault("name", name)
    # A derived preset gets its own references, not its base's.
    d.setdefault("reference", {})
    return from_dict(d, base)


def read_yaml(path: str | Path) -> dict:
    """A YAML file of `key: value` lines as a dict; a file that is not one is a ConfigError naming it."""
    _given(path)
    path = Path(path)
    try:
        # a FIFO or a device would hang or never end: only a regular file is opened
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"config file {path} is not a regular file; give a YAML file")
        with open(path, "rb", opener=lambda p, f: os.open(p, f | getattr(os, "O_NONBLOCK", 0))) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES >> 20} MiB; a config file is a few "
                          f"lines of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a config file is YAML text") from None
    return _check_mapping(_parse_yaml(text, str(path)), str(path))


def _given(path) -> None:
    if not str(path).strip():  # Path("") would be the current folder
        raise ConfigError("the config file's path is empty; give a YAML file")


def load_file(path: str | Path, check: bool = True) -> Config:
    """A config file (`base: PRESET` and keys); `check`: validated as a whole too (its keys' types always are)."""
    _given(path)
    path = Path(path)
    d = read_yaml(path)
    base = load_preset(d.pop("base")) if "base" in d else None
    d.setdefault("name", path.stem)
    try:
        return from_dict(d, base, check)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# words, published figures, the comparability mark: no part of what a run trains
NOTES = ("description", "reference", "comparable")


def differences(a: Config, b: Config) -> list[str]:
    """The settings whose values differ between two configs (notes aside), in the order of the fields."""
    da, db = to_dict(a), to_dict(b)
    return [k for k in FIELDS if k not in NOTES and da[k] != db[k]]


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


def resolve_config(preset: str | None, config: str | None, overrides: list[str], complete=None):
    """Preset or file, then overrides; a run scaled away from its preset is marked not comparable.

    complete(cfg, given), when given, fills in settings the caller defaults (tune's val_split)
    before the config is checked; `given` is the overrides as a dict.
    """
    base = (load_file(config, check=complete is None) if config is not None
            else load_preset("vgg3" if preset is None else preset))
    given = parse_overrides(overrides)
    cfg = from_dict(given, base, check=complete is None)
    if complete is not None:
        complete(cfg, given)
        validate(cfg)
    if cfg.epochs != base.epochs or cfg.subset != base.subset:
        cfg.comparable = False
    return cfg
