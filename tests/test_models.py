import math

import pytest
import torch
from torch import nn

from cifarlab.config import ConfigError, apply_overrides, load_preset, from_dict
from cifarlab.models import VGG, build_model, count_parameters


def test_baseline_has_the_keras_parameter_count():
    # Keras model.summary() of the study's 3-block baseline: 550,570 trainable parameters.
    assert count_parameters(build_model(load_preset("vgg3"))) == 550_570


@pytest.mark.parametrize("blocks,params", [(1, 1_060_138), (2, 591_274), (3, 550_570)])
def test_shapes_and_counts_per_depth(blocks, params):
    net = VGG(blocks=blocks)
    assert net(torch.zeros(4, 3, 32, 32)).shape == (4, 10)
    # convs + Dense(128) on the flattened map + Dense(10)
    assert count_parameters(net) == params


def test_batchnorm_uses_keras_momentum_and_epsilon():
    net = VGG(batchnorm=True, dropout=[0.2, 0.3, 0.4, 0.5])
    bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(bns) == 7  # after each of 6 convs and after Dense 128
    assert all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    drops = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.2, 0.3, 0.4, 0.5]


def test_combined_order_and_swapped_order():
    combined = [type(m).__name__ for m in VGG(batchnorm=True, dropout=0.2).features]
    assert combined[:8] == ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d",
                            "MaxPool2d", "Dropout"]
    swapped = VGG(batchnorm=True, dropout=0.2, bn_dropout_order="swapped")
    names = [type(m).__name__ for m in swapped.features]
    assert names[:8] == ["Conv2d", "ReLU", "Dropout", "Conv2d", "ReLU", "Dropout", "MaxPool2d", "BatchNorm2d"]
    assert [type(m).__name__ for m in swapped.head][3:5] == ["Dropout", "BatchNorm1d"]


def test_pool_before_relu_matches_the_keras_order_in_values_and_gradients(cifar):
    # The baseline pools before its block-closing ReLU; the Keras order (ReLU, then pool)
    # must give the same logits and the same gradients on real images.
    torch.manual_seed(0)
    net = VGG()
    assert [type(m).__name__ for m in net.features][:5] == ["Conv2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    keras = VGG()
    layers = list(keras.features)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    keras.features = nn.Sequential(*layers)
    keras.load_state_dict(net.state_dict())  # same keys: no parameter moved
    x = torch.from_numpy(cifar.x_test[:64]).float().div(255)
    y = torch.from_numpy(cifar.y_test[:64]).long()
    for m in (net, keras):
        nn.functional.cross_entropy(m(x), y).backward()
    assert torch.allclose(net(x), keras(x), atol=1e-6)
    for a, b in zip(net.parameters(), keras.parameters()):
        assert a.grad.abs().sum() > 0
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_keras_initialisation():
    torch.manual_seed(0)
    net = VGG()
    conv = net.features[0]
    bound = math.sqrt(6 / (3 * 3 * 3))  # he_uniform
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    out = net.head[-1]
    glorot = math.sqrt(6 / (128 + 10))
    assert out.weight.abs().max() <= glorot and out.weight.abs().max() > 0.9 * glorot
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert len(net.kernels()) == 7  # 6 conv kernels + Dense 128; not the output layer


def test_dropout_rates_must_match_positions():
    with pytest.raises(ConfigError, match="need 4"):
        from_dict({"dropout": [0.2, 0.3]})


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_the_rate_scale_and_gradient_of_torchs(cifar, p):
    from cifarlab.models.vgg import Dropout
    x = torch.from_numpy(cifar.x_train[:512]).float().div(255).requires_grad_()  # 1.57M real values
    drop = Dropout(p)
    torch.manual_seed(0)
    y = drop(x)
    y.sum().backward()
    mask = x.grad  # the gradient is the mask: 0 where dropped, 1 / (1 - p) where kept
    assert mask.unique().tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert torch.allclose(y, x * mask)
    kept = mask != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the torch generator decides: seeded runs repeat
    assert not torch.equal(drop(x), y)
    drop.eval()
    assert drop(x) is x or torch.equal(drop(x), x)
    # the lanes of one 64-bit draw are not correlated: neighbours are kept independently
    k = kept.flatten().float()
    both = (k[:-1] * k[1:]).mean().item()
    assert abs(both - (1 - p) ** 2) < 0.002


def test_model_dropout_is_cifarlabs_own():
    from cifarlab.models.vgg import Dropout
    net = VGG(batchnorm=True, dropout=[0.2, 0.3, 0.4, 0.5])
    assert [type(m) for m in net.modules() if isinstance(m, nn.Dropout)] == [Dropout] * 4


def test_dropout_mask_follows_the_input_layout(cifar):
    from cifarlab.models.vgg import Dropout, keep_mask
    x = torch.from_numpy(cifar.x_train[:64]).float().div(255).contiguous(memory_format=torch.channels_last)
    m = keep_mask(x, 0.3)
    assert m.is_contiguous(memory_format=torch.channels_last) and m.shape == x.shape
    assert abs((m != 0).float().mean().item() - 0.7) < 0.005
    y = Dropout(0.3)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    t = x.transpose(0, 1)  # neither layout: the mask is still a valid one
    assert keep_mask(t, 0.3).shape == t.shape


def test_every_network_declares_the_training_hooks():
    from cifarlab.models import Model
    vgg = build_model(load_preset("vgg3"))
    fast = build_model(apply_overrides(load_preset("fast94"), ["whiten_bias_epochs=2"]))
    assert isinstance(vgg, Model) and isinstance(fast, Model)
    before = {k: v.clone() for k, v in vgg.state_dict().items()}
    vgg.setup_from_data(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(3), torch.ones(3))
    vgg.on_epoch_start(0)  # VGG needs neither hook: nothing changes
    assert all(torch.equal(before[k], v) for k, v in vgg.state_dict().items())
    fast.on_epoch_start(1)  # the config's whiten_bias_epochs travels with the network
    assert fast.whiten.bias.requires_grad
    fast.on_epoch_start(2)
    assert not fast.whiten.bias.requires_grad
