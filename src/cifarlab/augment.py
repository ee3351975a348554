"""Augmentation on a whole batch, as tensor ops on whatever device trains.

    g = torch.Generator().manual_seed(0)
    xb = random_flip(xb, g)                     # uint8 or float, (N, C, H, W)
    xb = random_shift(xb.float(), 0.1, g)       # Keras width/height_shift_range=0.1
    xb = random_crop(xb, pad=4, gen=g)          # reflect padding, then a random 32x32 window
    mask = alternating_flip_mask(50000, epoch=3, seed=0)   # "derandomised" flip: per image, every other epoch
    xb = flip(xb, mask[idx])
    logits = tta_logits(net, xb, level=1)       # xb normalised: log of the mean probability of it and its mirror

Random numbers come from a CPU generator (a few per image), so a batch's augmentation
is the same on every device for the same seed.
"""
from __future__ import annotations

import torch


def _draw(shape, gen, device, kind="rand", high=None):
    if kind == "rand":
        t = torch.rand(shape, generator=gen)
    else:
        t = torch.randint(0, high, shape, generator=gen)
    return t.to(device, non_blocking=True)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where `mask` is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return flip(x, _draw((x.shape[0],), gen, x.device) < 0.5)


def alternating_flip_mask(n: int, epoch: int, seed: int) -> torch.Tensor:
    """Which of n images to mirror in `epoch` (0-based): a seeded half in even epochs, the other half
    in odd ones, so every image is seen both ways within any two consecutive epochs (a coin toss
    per epoch leaves a quarter of the images unmirrored, or mirrored, two epochs running)."""
    start = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed * 7_919 + 17))
    return (start ^ (epoch % 2)).bool()


def _lerp_axis(x: torch.Tensor, offset: torch.Tensor, dim: int) -> torch.Tensor:
    """Move each image by `offset` pixels (float, per image) along `dim`, bilinear, nearest-edge fill."""
    n, size = x.shape[0], x.shape[dim]
    pos = torch.arange(size, device=x.device, dtype=x.dtype).view(1, size) - offset.view(n, 1)
    lo = pos.floor()
    w = pos - lo
    i0 = lo.long().clamp_(0, size - 1)
    i1 = (lo.long() + 1).clamp_(0, size - 1)
    shape = [n, 1, 1, 1]
    shape[dim] = size
    view = lambda t: t.view(shape).expand(x.shape)  # noqa: E731
    return x.gather(dim, view(i0)) * (1 - view(w)) + x.gather(dim, view(i1)) * view(w)


def shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate float images right by dx and down by dy pixels (sub-pixel, bilinear);
    pixels that come from outside the image take the nearest edge pixel (Keras fill_mode="nearest")."""
    return _lerp_axis(_lerp_axis(x, dx.to(x.dtype), 3), dy.to(x.dtype), 2)


def random_shift(x: torch.Tensor, frac: float, gen: torch.Generator) -> torch.Tensor:
    """Keras ImageDataGenerator(width_shift_range=frac, height_shift_range=frac): a uniform shift
    in [-frac, frac] of the side, independently per axis and per image."""
    n, _, h, w = x.shape
    d = (_draw((2, n), gen, x.device) * 2 - 1) * frac
    return shift(x, d[0] * w, d[1] * h)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def crop(x: torch.Tensor, pad: int, ox: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
    """The window at (oy, ox) of each image reflect-padded by `pad`: offsets in [0, 2*pad]."""
    n, _, h, w = x.shape
    rows = _reflect(torch.arange(h, device=x.device).view(1, h) + oy.view(n, 1) - pad, h)
    cols = _reflect(torch.arange(w, device=x.device).view(1, w) + ox.view(n, 1) - pad, w)
    idx = torch.arange(n, device=x.device).view(n, 1, 1)
    out = x.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)  # channels_last in memory, NCHW in shape


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    o = _draw((2, x.shape[0]), gen, x.device, "int", 2 * pad + 1)
    return crop(x, pad, o[0], o[1])


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (0-255) to float: (x/255 - mean) / std per channel; mean/std on the 0-1 scale."""
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    return x.float() * scale - (mean / std).view(1, -1, 1, 1)


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator, shift_frac: float = 0.1,
                  pad: int = 4, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The config's augmentation on a uint8 batch; returns float (0-255) where interpolation needs it.

    flip_mask (bool per image, e.g. from alternating_flip_mask) replaces the coin-toss flip of
    every kind that flips.
    """
    mirror = (lambda t: flip(t, flip_mask.to(t.device))) if flip_mask is not None \
        else (lambda t: random_flip(t, gen))  # noqa: E731
    if kind == "none":
        return x
    if kind == "flip":
        return mirror(x)
    if kind == "crop_flip":
        return mirror(random_crop(x, pad, gen))
    if kind == "shift_flip":
        return mirror(random_shift(x.float(), shift_frac, gen))
    raise ValueError(f"unknown augmentation {kind!r}; choose one of: none, flip, crop_flip, shift_flip")


# --- test-time augmentation ------------------------------------------------------------

TTA_LEVELS = (0, 1, 2)


def tta_level(tta) -> int:
    """A test-time augmentation level as training's `tta` is (0, 1, 2); True (the mirror) is 1."""
    if isinstance(tta, bool) or (isinstance(tta, int) and tta in TTA_LEVELS):
        return int(tta)
    raise ValueError(f"tta={tta!r}: a level, 0 (none), 1 (with the mirror) or 2 (also one-pixel shifts)")


def tta_views(xb: torch.Tensor, level: int) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs: level 0 the batch; 1 and its mirror; 2 also the batch moved one pixel
    down-right and one pixel up-left (reflect padding), with their mirrors. Weights sum to 1; the
    untranslated pair keeps half of the weight, as the moved views see a cropped border."""
    if level == 0:
        return [(1.0, xb)]
    if level == 1:
        return [(0.5, xb), (0.5, xb.flip(3))]
    n = xb.shape[0]
    zero = torch.zeros(n, dtype=torch.long, device=xb.device)
    moved = [crop(xb, 1, zero + o, zero + o) for o in (0, 2)]  # content moved 1 px down-right, up-left
    return [(0.25, xb), (0.25, xb.flip(3))] + [(0.125, v) for m in moved for v in (m, m.flip(3))]


def tta_logits(forward, xb: torch.Tensor, level: int) -> torch.Tensor:
    """Logits of a normalised batch under test-time augmentation: `forward(view)` gives a view's
    float32 logits (a PyTorch network, an ONNX session, ...); level 0 returns forward(xb) as it is,
    levels 1 and 2 the log of the weighted mean of the views' probabilities (see tta_views)."""
    level = int(level)
    if level == 0:
        return forward(xb)
    prob = 0
    for w, v in tta_views(xb, level):
        prob = prob + w * forward(v).softmax(1)
    return torch.log(prob)
