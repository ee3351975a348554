"""Measure a trained model on the CIFAR-10 test set: accuracy, loss, per class, confusion.

    cifarlab evaluate runs/vgg3-20261126-120000          # writes evaluation.json, confusion.png
    cifarlab evaluate runs/vgg3-20261126-120000 --tta    # mirror TTA: evaluation_tta.json, confusion_tta.png

    from cifarlab.evaluate import evaluate_model
    result = evaluate_model(cifarlab.load("runs/x"))     # the same numbers, no files

The test images go through the run's own normalisation, in float32, in the run's
evaluation batches and memory format, so without TTA the accuracy is the one the run
reported in summary.json (on the same kind of device; a run trained with bf16 autocast
on a GPU reported it under autocast).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import plots
from .data import CLASSES


def confusion_matrix(y, pred, n: int = len(CLASSES)) -> np.ndarray:
    """(n, n) counts of true class `y` (rows) against predicted class `pred` (columns); arrays or tensors."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    return np.bincount(y * n + pred, minlength=n * n).reshape(n, n)


def per_class_accuracy(matrix, classes=CLASSES) -> dict[str, float]:
    """Each class's share of its test images predicted right, from a confusion matrix."""
    m = np.asarray(matrix)
    return dict(zip(classes, (np.diag(m) / np.maximum(m.sum(1), 1)).tolist()))


def evaluate_model(model, tta: bool = False, data=None) -> dict:
    """Test-set results of a cifarlab.predict.Model; `data` is a --data path or a loaded CIFAR10."""
    from .data import CIFAR10, load_cifar10
    ds = data if isinstance(data, CIFAR10) else load_cifar10(data)
    x, y = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    t0 = time.perf_counter()
    logits = model.logits(x, batch_size=model.config.get("eval_batch_size", 1000), tta=tta)
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


def evaluate_run(run_dir, tta: bool = False, data=None, device: str = "auto") -> tuple[dict, list[Path]]:
    """Evaluate a run folder's checkpoint and write the results into the folder."""
    from .predict import load_checkpoint
    run_dir = Path(run_dir)
    model = load_checkpoint(run_dir / "checkpoint.pt", device)
    result = evaluate_model(model, tta=tta, data=data)
    return result, write_evaluation(run_dir, result, model.config.get("name"), tta)


def write_evaluation(run_dir, result: dict, name, tta: bool = False) -> list[Path]:
    """evaluation[_tta].json and confusion[_tta].png in the run folder."""
    from .checkpoint import atomic_write_text
    run_dir = Path(run_dir)
    suffix = "_tta" if tta else ""
    files = [run_dir / f"evaluation{suffix}.json", run_dir / f"confusion{suffix}.png"]
    atomic_write_text(files[0], json.dumps(result, indent=2))
    title = f"{name}: test accuracy {result['test_acc']:.4f}" + (" (flip TTA)" if tta else "")
    plots.confusion(result["confusion"], CLASSES, files[1], title)
    return files


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a run",
                       description="Evaluate a run's checkpoint on the 10,000 CIFAR-10 test images and write "
                                   "evaluation.json and confusion.png into the run folder (with --tta: "
                                   "evaluation_tta.json and confusion_tta.png).")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation: average the probabilities "
                                                     "of each image and its mirror")
    p.add_argument("--data", help="CIFAR-10 folder or archive (default: $CIFARLAB_DATA, then the user cache)")
    p.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from .cli import UsageError
    run = Path(args.run)
    if not (run / "checkpoint.pt").is_file():
        raise UsageError(f"{run}: not a run folder with a checkpoint.pt (evaluate an exported model "
                         f"from Python: cifarlab.load(PATH).evaluate())")
    from .predict import load_checkpoint
    model = load_checkpoint(run / "checkpoint.pt", args.device)
    r = evaluate_model(model, tta=args.tta, data=args.data)
    print(f"{run}: checkpoint of epoch {r['epoch']}, {r['images']:,} test images, {r['device']}"
          + (", flip TTA" if args.tta else ""))
    print(f"{'class':<12} {'accuracy':>8}")
    for name, acc in r["per_class_acc"].items():
        print(f"{name:<12} {acc:>8.4f}")
    line = f"test accuracy {r['test_acc']:.4f}  test loss {r['test_loss']:.4f}"
    summary = run / "summary.json"
    if summary.is_file() and not args.tta:
        line += f"  (summary.json: {json.loads(summary.read_text())['test_acc']:.4f})"
    print(line)
    try:
        files = write_evaluation(run, r, model.config.get("name"), args.tta)
    except OSError as e:  # a read-only run folder: the results above are all there is
        print(f"cifarlab evaluate: warning: could not write the results into {run} "
              f"({e.strerror or e}); they are printed above only", file=sys.stderr)
        return 0
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
