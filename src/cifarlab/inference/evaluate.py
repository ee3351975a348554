"""Measure a trained model on the CIFAR-10 test set: accuracy, loss, per class, confusion.

    cifarlab evaluate runs/vgg3-20261126-120000          # writes evaluation.json, confusion.png
    cifarlab evaluate runs/vgg3-20261126-120000 --tta    # mirror TTA: evaluation_tta.json, confusion_tta.png

    from cifarlab.inference.evaluate import evaluate_model
    result = evaluate_model(cifarlab.load("runs/x"))     # the same numbers, no files

The test images go through the run's own normalisation, in float32, in the run's
evaluation batches and memory format, so without TTA the accuracy is the one the run
reported in summary.json (on the same kind of device; a run trained with bf16 autocast
on a GPU reported it under autocast).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import plots
from ..data import CIFAR10, CLASSES, load_cifar10
from ..files import atomic_write_text
from ..metrics import confusion_matrix, per_class_accuracy


def evaluate_model(model, tta: int = 0, data=None) -> dict:
    """Test-set results of a cifarlab.Classifier; `data` is a --data path or a loaded CIFAR10."""
    ds = data if isinstance(data, CIFAR10) else load_cifar10(data)
    x, y = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    t0 = time.perf_counter()
    logits = model.logits(x, batch_size=model.config.get("eval_batch_size", 1000), tta=tta)  # checks the level
    tta = int(tta)
    seconds = time.perf_counter() - t0
    pred = logits.argmax(1)
    confusion = confusion_matrix(y, pred)
    return {
        "test_acc": (pred == y).double().mean().item(),
        "test_loss": F.cross_entropy(logits, y).item(),
        "tta": tta,
        "images": len(y),
        "per_class_acc": per_class_accuracy(confusion),
        "confusion": confusion.tolist(),
        "model": model.source,
        "epoch": model.info.get("epoch"),
        "backend": model.backend,
        "device": str(model.device),
        "seconds": seconds,
    }


TTA_NAMES = {0: "", 1: "flip TTA", 2: "TTA level 2: flips and one-pixel shifts"}


def tta_suffix(tta: int) -> str:
    """The files' suffix of an evaluation at a TTA level: none, _tta (the mirror), _tta2."""
    return {0: "", 1: "_tta"}.get(int(tta), f"_tta{int(tta)}")


def write_evaluation(run_dir, result: dict, name, tta: int = 0) -> list[Path]:
    """evaluation[_tta|_tta2].json and confusion[_tta|_tta2].png in the run folder."""
    run_dir = Path(run_dir)
    suffix = tta_suffix(tta)
    files = [run_dir / f"evaluation{suffix}.json", run_dir / f"confusion{suffix}.png"]
    atomic_write_text(files[0], json.dumps(result, indent=2))
    title = f"{name}: test accuracy {result['test_acc']:.4f}" + (f" ({TTA_NAMES[int(tta)]})" if tta else "")
    plots.confusion(result["confusion"], CLASSES, files[1], title)
    return files
