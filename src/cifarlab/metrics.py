"""Classification metrics from predictions: the confusion matrix and per-class accuracy,
used by `cifarlab evaluate` and by the study report's best-run analysis."""
from __future__ import annotations

import numpy as np

from .data import CLASSES


def confusion_matrix(y, pred, n: int = len(CLASSES)) -> np.ndarray:
    """(n, n) counts of true class `y` (rows) against predicted class `pred` (columns); arrays or tensors."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    return np.bincount(y * n + pred, minlength=n * n).reshape(n, n)


def per_class_accuracy(matrix, classes=CLASSES) -> dict[str, float]:
    """Each class's share of its test images predicted right, from a confusion matrix."""
    m = np.asarray(matrix)
    return dict(zip(classes, (np.diag(m) / np.maximum(m.sum(1), 1)).tolist()))
