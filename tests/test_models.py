import math

import pytest
import torch
from torch import nn

from cifarlab.config import ConfigError, load_preset, from_dict
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
