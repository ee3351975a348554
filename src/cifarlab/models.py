"""The study's VGG family, initialised as Keras initialises it.

    from cifarlab.models import build_model
    net = build_model(cfg)            # cfg: cifarlab.config.Config
    net(torch.zeros(8, 3, 32, 32))    # logits, shape (8, 10)

A block is Conv3x3-ReLU -> Conv3x3-ReLU -> MaxPool2 (Keras `padding="same"`). With
batchnorm, BN follows every conv's ReLU and the dense layer's ReLU, before any
dropout (the study's "combined"); `bn_dropout_order="swapped"` puts Dropout where
BN was and BN where Dropout was. Keras details kept: he_uniform for the convs and
the hidden dense layer, glorot_uniform for the output, zero biases, and BN momentum
0.99 / epsilon 1e-3 (PyTorch momentum 0.01).
"""
from __future__ import annotations

import torch
from torch import nn

BN_MOMENTUM = 0.01  # Keras momentum 0.99: running = 0.99 * running + 0.01 * batch
BN_EPS = 1e-3  # Keras default


def _rates(dropout, blocks: int) -> list[float]:
    if isinstance(dropout, (list, tuple)):
        return [float(r) for r in dropout]
    return [float(dropout)] * (blocks + 1)


def _bn(channels: int, dims: int = 2) -> nn.Module:
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class VGG(nn.Module):
    def __init__(self, blocks: int = 3, widths=(32, 64, 128), dense: int = 128, dropout=0.0,
                 batchnorm: bool = False, bn_dropout_order: str = "bn_first", num_classes: int = 10):
        super().__init__()
        rates = _rates(dropout, blocks)
        swapped = bn_dropout_order == "swapped"
        layers: list[nn.Module] = []
        c_in = 3
        for b in range(blocks):
            w = widths[b]
            for _ in range(2):
                layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(inplace=True)]
                if batchnorm and not swapped:
                    layers.append(_bn(w))
                elif batchnorm and rates[b] > 0:  # swapped: Dropout where BN was
                    layers.append(nn.Dropout(rates[b]))
                c_in = w
            layers.append(nn.MaxPool2d(2))
            if batchnorm and swapped:  # ... and BN where Dropout was
                layers.append(_bn(w))
            elif rates[b] > 0:
                layers.append(nn.Dropout(rates[b]))
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** blocks
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(c_in * side * side, dense), nn.ReLU(inplace=True)]
        if batchnorm and swapped:
            head += [nn.Dropout(rates[-1]), _bn(dense, 1)]
        else:
            if batchnorm:
                head.append(_bn(dense, 1))
            if rates[-1] > 0:
                head.append(nn.Dropout(rates[-1]))
        head.append(nn.Linear(dense, num_classes))
        self.head = nn.Sequential(*head)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m is self.head[-1]:
                    nn.init.xavier_uniform_(m.weight)  # Keras glorot_uniform
                else:
                    nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # he_uniform: U(+-sqrt(6/fan_in))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def kernels(self) -> list[nn.Parameter]:
        """The weights Keras's `l2(c)` regularises in the study: every conv and the hidden dense kernel."""
        ks = [m.weight for m in self.features if isinstance(m, nn.Conv2d)]
        return ks + [m.weight for m in self.head[:-1] if isinstance(m, nn.Linear)]


def build_model(cfg) -> nn.Module:
    if cfg.model == "vgg":
        return VGG(cfg.blocks, cfg.widths, cfg.dense, cfg.dropout, cfg.batchnorm, cfg.bn_dropout_order)
    if cfg.model == "fast94":
        from .fastnet import from_config
        return from_config(cfg)
    raise ValueError(f"unknown model {cfg.model!r}; choose one of: vgg, fast94")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
