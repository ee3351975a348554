"""The networks: the study's VGG family (vgg.py) and the fast recipe's network (fastnet.py),
both implementing the training loop's interface (base.py: Model).

    from cifarlab.models import build_model
    net = build_model(cfg)            # cfg: cifarlab.config.Config
    net(torch.zeros(8, 3, 32, 32))    # logits, shape (8, 10)
"""
from __future__ import annotations

from torch import nn

from .base import Model
from .fastnet import from_config
from .vgg import VGG


def build_model(cfg) -> Model:
    if cfg.model == "vgg":
        return VGG(cfg.blocks, cfg.widths, cfg.dense, cfg.dropout, cfg.batchnorm, cfg.bn_dropout_order)
    if cfg.model == "fast94":
        return from_config(cfg)
    raise ValueError(f"unknown model {cfg.model!r}; choose one of: vgg, fast94")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
