"""The fast94 recipe's parts, each on real CIFAR-10 images, and a smoke run of the preset."""
import pytest
import torch
from torch import nn

from cifarlab.augment import alternating_flip_mask, augment_batch, normalize
from cifarlab.config import ConfigError, apply_overrides, load_preset
from cifarlab.models.fastnet import FastNet, patch_whitening
from cifarlab.models import build_model, count_parameters
from cifarlab.optim import Lookahead, build_optimizer, lookahead_decay, set_lr
from cifarlab.augment import tta_views
from cifarlab.engine import evaluate
from cifarlab.train import train


@pytest.fixture(scope="module")
def images(cifar):
    x = torch.from_numpy(cifar.x_train[:2000])
    mean = x.float().mean((0, 2, 3)) / 255
    std = x.float().std((0, 2, 3)) / 255
    return x, torch.from_numpy(cifar.y_train[:2000]), mean, std


def _patch_cov(out: torch.Tensor) -> torch.Tensor:
    f = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).double()
    f = f - f.mean(0)
    return f.T @ f / len(f)


def test_whitened_patch_covariance_is_identity(images):
    x, _, mean, std = images
    xn = normalize(x, mean, std)
    w = patch_whitening(xn, eps=0.0)
    assert w.shape == (24, 3, 2, 2)
    cov = _patch_cov(nn.functional.conv2d(xn, w[:12]))  # the 12 eigen-directions (the rest are negatives)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=1e-3), cov.diagonal()
    # Raw patches are far from white: neighbouring pixels correlate strongly.
    raw = _patch_cov(xn.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 1, 4, 5, 2, 3).reshape(2000, 12, 31, 31))
    assert raw[0, 1] > 0.8 * raw[0, 0]


def test_eps_damps_only_the_weakest_directions(images):
    x, _, mean, std = images
    xn = normalize(x, mean, std)
    d = _patch_cov(nn.functional.conv2d(xn, patch_whitening(xn)[:12])).diagonal()
    assert d[0] > 0.999 and (d < 1).all() and d[-1] > 0.3  # largest kept, smallest shrunk, none killed


def test_fastnet_layout_and_off_switches(images):
    x, _, mean, std = images
    net = FastNet()
    assert count_parameters(net) == 1_972_792  # 24*12+24 + convs 64/256/256 + BN + head 256*10
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6 and not any(b.weight.requires_grad for b in bns)
    assert not net.whiten.weight.requires_grad
    before = net.whiten.weight.clone()
    net.setup_from_data(x, mean, std, n=500)
    assert not torch.equal(before, net.whiten.weight)
    net.on_epoch_start(2)  # whiten_bias_epochs=3: the bias trains in epochs 0, 1, 2
    assert net.whiten.bias.requires_grad
    net.on_epoch_start(3)
    assert not net.whiten.bias.requires_grad
    plain = build_model(apply_overrides(load_preset("fast94"), ["whiten=false", "bn_freeze_weight=false"]))
    w = plain.whiten.weight.clone()
    plain.setup_from_data(x, mean, std)
    assert torch.equal(w, plain.whiten.weight) and plain.whiten.weight.requires_grad
    assert all(m.weight.requires_grad for m in plain.modules() if isinstance(m, nn.BatchNorm2d))


def test_alternating_flip_mirrors_each_image_every_other_epoch(images):
    x = images[0][:64]
    masks = [alternating_flip_mask(2000, e, seed=3) for e in range(3)]
    assert torch.equal(masks[0], masks[2]) and torch.equal(masks[1], ~masks[0])
    assert 900 < int(masks[0].sum()) < 1100  # about half start mirrored
    assert not torch.equal(masks[0], alternating_flip_mask(2000, 0, seed=4))  # seeded
    m = masks[1][:64]
    out = augment_batch(x, "flip", torch.Generator().manual_seed(0), flip_mask=m)
    assert torch.equal(out[m], x[m].flip(3)) and torch.equal(out[~m], x[~m])
    # with translation: a 0-pixel pad keeps the images; the flip still follows the mask
    out = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0), pad=0, flip_mask=m)
    assert torch.equal(out[m], x[m].flip(3)) and torch.equal(out[~m], x[~m])


def test_translate_moves_real_images_by_at_most_two_pixels(images):
    x = images[0][:32]
    out = augment_batch(x, "crop_flip", torch.Generator().manual_seed(1), pad=2,
                        flip_mask=torch.zeros(32, dtype=torch.bool))
    found = 0
    for a, b in zip(x, out):  # every output is the input moved by some (dy, dx) in [-2, 2]
        found += any(torch.equal(b[:, max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)],
                                 a[:, max(-dy, 0):32 + min(-dy, 0), max(-dx, 0):32 + min(-dx, 0)])
                     for dy in range(-2, 3) for dx in range(-2, 3))
    assert found == 32
    assert not torch.equal(out, x)


def test_bias_lr_scale_groups():
    cfg = apply_overrides(load_preset("fast94"), [])
    net = build_model(cfg)
    opt = build_optimizer(net, cfg)
    set_lr(opt, 0.5)
    fast = [g for g in opt.param_groups if g.get("lr_scale") == 64]
    assert fast and all(g["lr"] == 32.0 for g in fast)
    shifts = {id(m.bias) for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(shifts) == 6 and {id(p) for g in fast for p in g["params"]} == shifts  # BN shifts only
    slow = {id(p) for g in opt.param_groups if g.get("lr_scale") is None for p in g["params"]}
    assert id(net.whiten.bias) in slow  # the whitening bias learns at the base rate
    g = fast[0]
    assert g["decoupled_decay"] * g["lr"] == pytest.approx(cfg.weight_decay * 0.5)  # same shrink per step
    off = build_optimizer(net, apply_overrides(cfg, ["bias_lr_scale=1"]))
    assert all("lr_scale" not in g for g in off.param_groups)


def test_lookahead_pulls_and_restarts_and_resumes():
    net = nn.Linear(3, 2)
    la = Lookahead(net, every=2, decay=0.9)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    la.step(0, 10)  # not a sync step
    assert torch.equal(net.weight, w0 + 1)
    la.step(1, 10)  # sync: decay 0.9**2 * (2/10)**3
    d = lookahead_decay(2, 10, 0.9, 2)
    assert d == pytest.approx(0.81 * 0.008)
    assert torch.allclose(net.weight, w0 + (1 - d)) and torch.allclose(la.slow[0], net.weight)
    state = la.state_dict()
    with torch.no_grad():
        net.weight.add_(5.0)
    la.finish()  # the model takes the slow weights
    assert torch.allclose(net.weight, w0 + (1 - d))
    other = Lookahead(nn.Linear(3, 2))
    other.load_state_dict(state)
    assert torch.equal(other.slow[0], state["slow"][0])
    assert lookahead_decay(0, 10) == 0 and lookahead_decay(10, 10) == pytest.approx(0.95 ** 5)


def test_tta_views_and_evaluate(images):
    x, y, mean, std = images
    xb = normalize(x[:8], mean, std)
    views = tta_views(xb, 2)
    assert len(views) == 6 and sum(w for w, _ in views) == pytest.approx(1.0)
    up_left = views[2][1]  # moved one pixel: its interior is the image shifted
    assert torch.equal(up_left[:, :, 1:, 1:], xb[:, :, :-1, :-1])
    net = FastNet().eval()
    net.setup_from_data(x, mean, std, n=500)
    r0 = evaluate(net, x[:200], y[:200], mean, std, 100, tta=0)
    r1 = evaluate(net, x[:200], y[:200], mean, std, 100, tta=1)
    with torch.no_grad():
        xn = normalize(x[:200], mean, std)
        want = torch.log((net(xn).softmax(1) + net(xn.flip(3)).softmax(1)) / 2)
    assert torch.allclose(r1["logits"], want, atol=1e-5)
    assert not torch.allclose(r0["logits"], r1["logits"])


def test_config_rejects_bad_fast_settings():
    with pytest.raises(ConfigError, match="tta"):
        apply_overrides(load_preset("fast94"), ["tta=6"])
    with pytest.raises(ConfigError, match="val_split"):
        apply_overrides(load_preset("fast94"), ["test=false", "val_split=0"])


SMOKE = ["subset=1200", "val_split=200", "epochs=3", "batch_size=100", "lr=0.15", "warmup_epochs=0.7",
         "tta=1", "eval_batch_size=1000"]


@pytest.mark.slow
def test_fast94_smoke_learns_on_a_real_subset(tmp_path):
    cfg = apply_overrides(load_preset("fast94"), SMOKE)
    s = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert s["test_acc"] > 0.25, s  # chance is 0.10; the full 10,000-image test set
    assert 0 < s["val_acc_final"] <= 1 and s["tta"] == 1


@pytest.mark.slow
def test_interrupted_fast94_resumes_exactly(tmp_path):
    over = ["subset=600", "val_split=100", "epochs=2", "batch_size=100", "lr=0.15", "lookahead_every=2",
            "whiten_bias_epochs=1", "tta=0", "test=false", "threads=1"]
    cfg = apply_overrides(load_preset("fast94"), over)
    ref = train(cfg, tmp_path / "ref", progress=False, log=lambda *a: None)

    class Stop(Exception):
        pass

    def stop_at_epoch_two(line):
        if line.lstrip().startswith("2 "):  # epoch 2's row is logged before its checkpoint
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", progress=False, log=stop_at_epoch_two)
    again = train(None, tmp_path / "cut", resume=True, progress=False, log=lambda *a: None)
    assert again["val_acc_final"] == ref["val_acc_final"]
    from cifarlab.runfolder import read_metrics
    # the checkpoint keeps the weights that were evaluated (Lookahead's slow ones), for predict/export
    from cifarlab.checkpoint import load, model_from_checkpoint
    from cifarlab.engine import amp_dtype, pick_device, prepare_data
    device = pick_device(cfg.device)  # where the run trained: a GPU, where there is one
    model = model_from_checkpoint(load(tmp_path / "ref" / "checkpoint.pt")).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = prepare_data(cfg, device)
    # on its device, in its own arithmetic (amp=native: bf16 where it is the faster) and batches: its
    # val_acc_final came from there; an fp32 evaluation of a barely trained network flips near-ties
    val = evaluate(model, data.x_val, data.y_val, data.mean, data.std, cfg.eval_batch_size, cfg.channels_last,
                   amp_dtype(cfg, device), tta=0)
    assert val["acc"] == ref["val_acc_final"]
    keys = ["train_loss", "train_acc", "val_loss", "val_acc"]
    assert [[r[k] for k in keys] for r in read_metrics(tmp_path / "ref")] == \
           [[r[k] for k in keys] for r in read_metrics(tmp_path / "cut")]
