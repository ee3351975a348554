import numpy as np
import torch
import torch.nn.functional as F

from cifarlab import augment as A


def batch(cifar, n=16):
    return torch.from_numpy(cifar.x_train[:n].copy())


def test_flip_is_exact_mirror(cifar):
    x = batch(cifar)
    mask = torch.tensor([True, False] * 8)
    out = A.flip(x, mask)
    assert torch.equal(out[0], x[0, :, :, torch.arange(31, -1, -1)])
    assert torch.equal(out[1], x[1])
    assert torch.equal(A.flip(out, mask), x)


def test_random_flip_flips_about_half(cifar):
    x = torch.from_numpy(cifar.x_train[:2000].copy())
    out = A.random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_integer_shift_moves_pixels_and_fills_with_edge(cifar):
    x = batch(cifar).float()
    n = len(x)
    out = A.shift(x, torch.full((n,), 3.0), torch.zeros(n))
    assert torch.equal(out[..., 3:], x[..., :-3])  # content moved right by 3
    for j in range(3):  # the uncovered columns repeat the left edge
        assert torch.equal(out[..., j], x[..., 0])
    out = A.shift(x, torch.zeros(n), torch.full((n,), -2.0))
    assert torch.equal(out[:, :, :-2], x[:, :, 2:])
    assert torch.equal(out[:, :, -1], x[:, :, -1]) and torch.equal(out[:, :, -2], x[:, :, -1])


def test_subpixel_shift_interpolates_between_neighbours(cifar):
    x = batch(cifar).float()
    n = len(x)
    half = A.shift(x, torch.full((n,), 0.5), torch.zeros(n))
    torch.testing.assert_close(half[..., 1:], (x[..., 1:] + x[..., :-1]) / 2)


def test_random_shift_stays_in_bounds(cifar):
    x = torch.from_numpy(cifar.x_train[:512].copy()).float()
    out = A.random_shift(x, 0.1, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    lo = x.flatten(1).min(1).values
    hi = x.flatten(1).max(1).values
    assert (out.flatten(1).min(1).values >= lo - 1e-4).all() and (out.flatten(1).max(1).values <= hi + 1e-4).all()
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert changed > 0.95  # almost every image moved by a non-zero fraction


def test_crop_matches_reflect_pad_reference(cifar):
    x = batch(cifar)
    n = len(x)
    g = torch.Generator().manual_seed(3)
    ox, oy = torch.randint(0, 9, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)
    out = A.crop(x, 4, ox, oy)
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    for i in range(n):
        ref = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        assert torch.equal(out[i].float(), ref)
    assert torch.equal(A.crop(x, 4, torch.full((n,), 4), torch.full((n,), 4)), x)  # centre window


def test_normalize_standardize_gives_zero_mean_unit_std(cifar):
    from cifarlab.data import TRAIN_MEAN, TRAIN_STD
    x = torch.from_numpy(cifar.x_train[:5000].copy())
    mean = torch.tensor(TRAIN_MEAN) / 255
    std = torch.tensor(TRAIN_STD) / 255
    out = A.normalize(x, mean, std)
    m = out.mean((0, 2, 3))
    s = out.transpose(0, 1).reshape(3, -1).std(1)
    assert m.abs().max() < 0.05 and (s - 1).abs().max() < 0.05
    scaled = A.normalize(x, torch.zeros(3), torch.ones(3))
    assert scaled.min() >= 0 and scaled.max() <= 1 and np.isclose(scaled.max().item(), 1.0)


def test_tta_logits_is_what_evaluate_computes(cifar):
    from torch import nn

    from cifarlab.engine import evaluate
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)).eval()
    x, y = batch(cifar, 32), torch.from_numpy(cifar.y_train[:32].copy())
    mean, std = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])
    xb = A.normalize(x, mean, std)
    for level in (0, 1, 2):
        want = evaluate(net, x, y, mean, std, 32, channels_last=False, tta=level)["logits"]
        with torch.no_grad():
            got = A.tta_logits(net, xb, level)
        assert torch.equal(got, want)
        assert len(A.tta_views(xb, level)) == {0: 1, 1: 2, 2: 6}[level]
