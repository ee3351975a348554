"""The `fast94` network: a small conv net built to reach 94% on CIFAR-10 in 10 to 15 epochs.

    from cifarlab.models.fastnet import FastNet, patch_whitening
    net = FastNet()                                   # widths 64, 256, 256; about 1.97 M parameters
    net.setup_from_data(x_train_uint8, mean, std)     # first layer whitens 2x2 patches of these images
    net(torch.zeros(8, 3, 32, 32))                    # logits, shape (8, 10)

Layout (the published fast-training recipes' shape): a 2x2 patch-whitening conv
(3 -> 24 channels, weights frozen, see `patch_whitening`) -> GELU, then three groups
conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU (32 -> 31 -> 15 -> 7 -> 3
pixels), a max-pool over the last 3x3 map and a bias-free linear layer whose output is
scaled by 1/9. Convs carry an identity ("dirac") component at init so every group
starts close to passing its input through.

Off switches (config fields, see `from_config`): `whiten=false` makes the first layer
an ordinary trainable conv; `bn_freeze_weight=false` trains the BN scales.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Model

BN_MOMENTUM = 0.4  # running = 0.6 * running + 0.4 * batch: the run is only ~500 steps long
BN_EPS = 1e-12  # the features are well scaled; a large eps would damp small-variance channels
OUT_SCALE = 1 / 9  # keeps the initial logits small so label smoothing is not fought early
WHITEN_EPS = 5e-4  # added to the patch-covariance eigenvalues before 1/sqrt (units of variance)


def patch_whitening(x: torch.Tensor, size: int = 2, eps: float = WHITEN_EPS) -> torch.Tensor:
    """Conv weights (2*C*size*size, C, size, size) that whiten the size x size patches of x.

    x: normalised float images (N, C, H, W). Each eigenvector v of the patch covariance
    gives a filter v / sqrt(lambda + eps) and its negative (so a following GELU keeps
    both signs), ordered from the largest eigenvalue down.
    """
    c = x.shape[1]
    patches = x.float().unfold(2, size, 1).unfold(3, size, 1)  # (N, C, H', W', size, size)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size).double()
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    lam, vec = torch.linalg.eigh(cov)  # ascending
    lam, vec = lam.flip(0), vec.flip(1)
    w = (vec / torch.sqrt(lam + eps)).T.reshape(-1, c, size, size)
    return torch.cat([w, -w]).float()


def _bn(channels: int, freeze_weight: bool) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    bn.weight.requires_grad_(not freeze_weight)  # frozen at 1: the next layer sets the scale anyway
    return bn


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int, freeze_bn_weight: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _bn(c_out, freeze_bn_weight)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _bn(c_out, freeze_bn_weight)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(Model):
    """whiten_bias_epochs: the whitening bias trains in the first N epochs only (0: always)."""

    def __init__(self, widths=(64, 256, 256), whiten: bool = True, freeze_bn_weight: bool = True,
                 whiten_width: int = 24, num_classes: int = 10, whiten_bias_epochs: int = 3):
        super().__init__()
        if whiten and whiten_width != 24:
            raise ValueError("whiten=True fixes the first layer at 24 channels (2 x 12 patch eigenvectors)")
        self.whiten_enabled = whiten
        self.whiten_bias_epochs = whiten_bias_epochs
        self.whiten = nn.Conv2d(3, whiten_width, 2, padding=0, bias=True)
        self.act = nn.GELU()
        groups, c = [], whiten_width
        for w in widths:
            groups.append(ConvGroup(c, w, freeze_bn_weight))
            c = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(c, num_classes, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.groups.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5)  # torch's default conv init
                n = min(m.in_channels, m.out_channels)
                torch.nn.init.dirac_(m.weight[:n])  # identity on the first channels
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
        if self.whiten_enabled:
            self.whiten.weight.requires_grad_(False)  # set by setup_from_data, then frozen
        nn.init.zeros_(self.whiten.bias)

    @torch.no_grad()
    def setup_from_data(self, x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                        n: int = 5000) -> None:
        """Set the whitening conv from the first `n` training images (uint8, NCHW)."""
        if not self.whiten_enabled:
            return
        from ..augment import normalize
        x = normalize(x_uint8[:n], mean, std)
        self.whiten.weight.copy_(patch_whitening(x).to(self.whiten.weight))

    def on_epoch_start(self, epoch: int) -> None:
        """Train the whitening bias only in the first `whiten_bias_epochs` epochs (0-based `epoch`)."""
        trainable = self.whiten_bias_epochs <= 0 or epoch < self.whiten_bias_epochs
        self.whiten.bias.requires_grad_(trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * OUT_SCALE


def from_config(cfg) -> FastNet:
    return FastNet(tuple(cfg.widths), whiten=cfg.whiten, freeze_bn_weight=cfg.bn_freeze_weight,
                   whiten_bias_epochs=cfg.whiten_bias_epochs)
