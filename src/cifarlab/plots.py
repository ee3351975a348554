"""Figures, drawn off-screen with matplotlib's Agg backend.

    curves(history, "runs/vgg3/curves.png")   # the study's two panels per run
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(history: list[dict], path: Path, title: str = "") -> None:
    """Cross-entropy loss and classification accuracy per epoch, train vs validation."""
    epochs = [r["epoch"] for r in history]
    mk = "o" if len(epochs) < 30 else None  # a short run's points stay visible
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in history], color="tab:blue", label="train", marker=mk)
    a.plot(epochs, [r["val_loss"] for r in history], color="tab:orange", label="validation", marker=mk)
    a.set_title("Cross Entropy Loss")
    b.plot(epochs, [r["train_acc"] for r in history], color="tab:blue", label="train", marker=mk)
    b.plot(epochs, [r["val_acc"] for r in history], color="tab:orange", label="validation", marker=mk)
    b.set_title("Classification Accuracy")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
