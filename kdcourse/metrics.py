"""Classification metrics (from scikit-learn) and summaries over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn import metrics as skm
from torch import Tensor

__all__ = ["classification_scores", "confusion_matrix", "roc_auc", "mean_std"]


def _labels_and_predictions(logits: Tensor, targets: Tensor) -> tuple[np.ndarray, np.ndarray]:
    return targets.cpu().numpy(), logits.argmax(-1).cpu().numpy()


def classification_scores(logits: Tensor, targets: Tensor, average: str = "macro") -> dict[str, float]:
    """Accuracy, precision, recall and F1 (all fractions in [0, 1]) of logits ``(N, C)`` against labels ``(N,)``.

    ``average`` is scikit-learn's averaging over classes (``"macro"`` weighs every class equally).
    """
    y_true, y_pred = _labels_and_predictions(logits, targets)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def confusion_matrix(logits: Tensor, targets: Tensor, num_classes: int | None = None) -> np.ndarray:
    """Counts ``(C, C)``: row = true class, column = predicted class."""
    y_true, y_pred = _labels_and_predictions(logits, targets)
    labels = list(range(num_classes if num_classes is not None else logits.shape[-1]))
    return skm.confusion_matrix(y_true, y_pred, labels=labels)


def roc_auc(logits: Tensor, targets: Tensor, positive_class: int = 1) -> float:
    """Area under the ROC curve of a two-class problem, from logits ``(N, 2)`` or scores ``(N,)``.

    The score of the positive class is its softmax probability (a monotone function of the logit
    difference, so the AUC is the same as with raw logit differences).
    """
    scores = torch.softmax(logits.float(), -1)[:, positive_class] if logits.dim() == 2 else logits.float()
    y_true = (targets == positive_class).cpu().numpy()
    if y_true.all() or not y_true.any():
        raise ValueError("AUC needs examples of both classes in targets")
    return float(skm.roc_auc_score(y_true, scores.cpu().numpy()))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0

