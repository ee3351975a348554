"""The study's VGG family, initialised as Keras initialises it.

    from cifarlab.models.vgg import VGG
    net = VGG(blocks=3, widths=[32, 64, 128], dense=128, dropout=0.0, batchnorm=False)
    net(torch.zeros(8, 3, 32, 32))    # logits, shape (8, 10)

Every network the training loop drives is a `models.base.Model`: it declares the two hooks
the loop calls, set-up from the training images and a call at each epoch's start.

A block is Conv3x3-ReLU -> Conv3x3-ReLU -> MaxPool2 (Keras `padding="same"`); where
nothing sits between the second ReLU and the pool, the two run in the equivalent order
MaxPool2 -> ReLU. With
batchnorm, BN follows every conv's ReLU and the dense layer's ReLU, before any
dropout (the study's "combined"); `bn_dropout_order="swapped"` puts Dropout where
BN was and BN where Dropout was. Keras details kept: he_uniform for the convs and
the hidden dense layer, glorot_uniform for the output, zero biases, and BN momentum
0.99 / epsilon 1e-3 (PyTorch momentum 0.01).
"""
from __future__ import annotations


import torch
from torch import nn

from .base import Model

BN_MOMENTUM = 0.01  # Keras momentum 0.99: running = 0.99 * running + 0.01 * batch
BN_EPS = 1e-3  # Keras default


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU: same rate, scaling and gradient.

    torch's CPU dropout draws its mask with `bernoulli_`, one generator call per element,
    a noticeable share of the combined model's step (measured in benchmarks/README.md).
    Here each 64-bit draw of the same torch generator gives four 16-bit numbers, and an
    element is kept where its number clears a threshold. The rate is rounded to a
    multiple of 1/65536 (0.2 -> 0.199997). Seeding and checkpointed generator state work
    as before; other devices keep torch's own kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1:
            return x * 0
        return x * keep_mask(x, self.p)


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A CPU dropout mask shaped and laid out like `like`: 0 with probability p (to 1/65536), else 1/(1-p).

    The mask takes `like`'s strides (channels_last stays channels_last): an elementwise
    product of two layouts falls off torch's fast path (bf16: 1.4 ms vs 0.8 for a
    64 x 32 x 16 x 16 dropout, forward and backward).
    """
    n = like.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)  # all 64 bits
    u16 = draws.view(torch.int16)[:n]  # uniform over -32768..32767
    dense = like.is_contiguous() or (like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last))
    u16 = u16.as_strided(like.shape, like.stride()) if dense else u16.view(like.shape)
    return (u16 >= round(p * 65536) - 32768).to(like.dtype).mul_(1 / (1 - p))


def _rates(dropout, blocks: int) -> list[float]:
    if isinstance(dropout, (list, tuple)):
        return [float(r) for r in dropout]
    return [float(dropout)] * (blocks + 1)


def _bn(channels: int, dims: int = 2) -> nn.Module:
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class VGG(Model):
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
                    layers.append(Dropout(rates[b]))
                c_in = w
            layers.append(nn.MaxPool2d(2))
            if isinstance(layers[-2], nn.ReLU):
                # ReLU then max-pool equals max-pool then ReLU (ReLU is monotone), values and
                # gradients alike; pooling first runs the ReLU on a quarter of the elements.
                # No parameters move, so state_dict keys and checkpoints are unchanged.
                layers[-2], layers[-1] = layers[-1], layers[-2]
            if batchnorm and swapped:  # ... and BN where Dropout was
                layers.append(_bn(w))
            elif rates[b] > 0:
                layers.append(Dropout(rates[b]))
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** blocks
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(c_in * side * side, dense), nn.ReLU(inplace=True)]
        if batchnorm and swapped:
            head += [Dropout(rates[-1]), _bn(dense, 1)]
        else:
            if batchnorm:
                head.append(_bn(dense, 1))
            if rates[-1] > 0:
                head.append(Dropout(rates[-1]))
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
