"""Figures, drawn off-screen with matplotlib's Agg backend.

    curves(history, "runs/vgg3/curves.png")   # the study's two panels per run
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .files import atomic_write  # noqa: E402


def penalised(history: list[dict]) -> bool:
    """Whether a record's validation loss with the L2 penalty (val_loss_l2) differs from its
    cross-entropy (val_loss): a run with `l2` recorded by a version that keeps both."""
    pen = [r.get("val_loss_l2") for r in history]
    return bool(history) and all(v is not None and math.isfinite(v) for v in pen) and any(
        v != r["val_loss"] for v, r in zip(pen, history))


def curves(history: list[dict], path: Path, title: str = "", l2: float = 0.0) -> None:
    """Loss and classification accuracy per epoch, train vs validation.

    The loss panel shows the loss as Keras reports it: the training loss with any L2 penalty
    (`l2`), as trained on, and the validation loss with the same penalty (val_loss_l2), the
    validation cross-entropy alone dashed beside it. A record without val_loss_l2 (an older
    version's) of a run with `l2` shows its validation cross-entropy alone, and says so."""
    epochs = [r["epoch"] for r in history]
    mk = "o" if len(epochs) < 30 else None  # a short run's points stay visible
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if penalised(history):
        a.plot(epochs, [r["train_loss"] for r in history], color="tab:blue", label="train (with L2)", marker=mk)
        a.plot(epochs, [r["val_loss_l2"] for r in history], color="tab:orange", label="validation (with L2)",
               marker=mk)
        a.plot(epochs, [r["val_loss"] for r in history], color="tab:orange", linestyle="--",
               label="validation, cross-entropy alone")
        a.set_title("Loss: cross-entropy + L2 penalty, as Keras reports it")
    elif l2:
        a.plot(epochs, [r["train_loss"] for r in history], color="tab:blue", label="train (with L2)", marker=mk)
        a.plot(epochs, [r["val_loss"] for r in history], color="tab:orange",
               label="validation, cross-entropy alone (penalty not recorded)", marker=mk)
        a.set_title("Loss (validation without the L2 penalty)")
    else:
        a.plot(epochs, [r["train_loss"] for r in history], color="tab:blue", label="train", marker=mk)
        a.plot(epochs, [r["val_loss"] for r in history], color="tab:orange", label="validation", marker=mk)
        a.set_title("Cross Entropy Loss")
    b.plot(epochs, [r["train_acc"] for r in history], color="tab:blue", label="train", marker=mk)
    b.plot(epochs, [r["val_acc"] for r in history], color="tab:orange", label="validation", marker=mk)
    b.set_title("Classification Accuracy")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    try:
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, dpi=100, format=Path(path).suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)


def overlay(series: dict[str, list[dict]], path: Path, title: str = "", key: str = "val_acc") -> None:
    """One metric per epoch for several runs on one axis (the study's group figures)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, history in series.items():
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r[key] for r in history], label=name, marker="o" if len(epochs) < 30 else None,
                markersize=3)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy" if key == "val_acc" else key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(fig, path)


def confusion(matrix, classes, path: Path, title: str = "") -> None:
    """Confusion matrix (rows: true class, columns: predicted), coloured by the share of each
    true class, counts written in."""
    import numpy as np
    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if title:
        ax.set_title(title)
    _save(fig, path)


def per_class(acc: dict[str, float], path: Path, title: str = "") -> None:
    """Accuracy of each class as horizontal bars, in percent."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(acc)
    ax.barh(names, [100 * acc[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(100 * acc[n] + 0.5, i, f"{100 * acc[n]:.1f}", va="center", fontsize=8)
    ax.set_xlim(0, 105)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title)
    _save(fig, path)
