"""The interface every network the training loop drives implements."""
from __future__ import annotations

import torch
from torch import nn


class Model(nn.Module):
    """A network the training loop drives, with its hooks (no-ops unless a network needs them).

    train() calls `setup_from_data` once, on a fresh run only (a resumed run's weights
    come from its checkpoint), before any step and before the weights are shared between
    processes; and `on_epoch_start(epoch)` (0-based) before each epoch's first step,
    also on the epochs a resumed run trains.
    """

    def setup_from_data(self, x_train: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set weights from the training images (uint8, NCHW) and their normalisation (0-1 scale)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Adjust the network before the 0-based `epoch` trains (which parameters learn, say)."""
