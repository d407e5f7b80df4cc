"""Tests of kdcourse.metrics: classification scores and summaries over seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from kdcourse.metrics import classification_scores, confusion_matrix, mean_std, roc_auc


def one_hot_logits(predictions: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), classes).float() * 5


# true:      0 0 0 1 1 2
# predicted: 0 0 1 1 2 2
TRUE = torch.tensor([0, 0, 0, 1, 1, 2])
LOGITS = one_hot_logits([0, 0, 1, 1, 2, 2], 3)


def test_classification_scores_by_hand() -> None:
    scores = classification_scores(LOGITS, TRUE)
    # per class precision: 2/2, 1/2, 1/2; recall: 2/3, 1/2, 1/1
    precision = (1 + 0.5 + 0.5) / 3
    recall = (2 / 3 + 0.5 + 1) / 3
    f1s = [2 * p * r / (p + r) for p, r in [(1, 2 / 3), (0.5, 0.5), (0.5, 1)]]
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx(precision)
    assert scores["recall"] == pytest.approx(recall)
    assert scores["f1"] == pytest.approx(sum(f1s) / 3)
    assert all(isinstance(v, float) for v in scores.values())


def test_classification_scores_micro_average_equals_accuracy() -> None:
    scores = classification_scores(LOGITS, TRUE, average="micro")
    assert scores["precision"] == scores["recall"] == scores["f1"] == pytest.approx(4 / 6)


def test_classification_scores_of_perfect_predictions() -> None:
    scores = classification_scores(one_hot_logits([0, 1, 2, 1], 3), torch.tensor([0, 1, 2, 1]))
    assert scores == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_confusion_matrix_rows_are_true_classes() -> None:
    matrix = confusion_matrix(LOGITS, TRUE)
    expected = np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == len(TRUE)


def test_confusion_matrix_includes_classes_never_seen() -> None:
    matrix = confusion_matrix(LOGITS, TRUE, num_classes=5)
    assert matrix.shape == (5, 5)
    assert matrix[3:].sum() == 0 and matrix[:, 3:].sum() == 0
    assert confusion_matrix(one_hot_logits([0, 0], 4), torch.tensor([0, 0])).shape == (4, 4)


def test_roc_auc_equals_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (60,), generator=generator)
    logits = torch.randn(60, 2, generator=generator) + targets.float().unsqueeze(1) * torch.tensor([0.0, 1.0])
    probabilities = torch.softmax(logits, -1)[:, 1].numpy()
    assert roc_auc(logits, targets) == pytest.approx(roc_auc_score(targets.numpy(), probabilities))
    # the same from logit differences (a monotone transform) and from raw scores (N,)
    assert roc_auc(logits[:, 1] - logits[:, 0], targets) == pytest.approx(roc_auc_score(targets.numpy(), probabilities))
    # positive_class=0 flips the roles
    assert roc_auc(logits, targets, positive_class=0) == pytest.approx(roc_auc_score(1 - targets.numpy(), 1 - probabilities))


def test_roc_auc_of_perfect_and_reversed_scores() -> None:
    targets = torch.tensor([0, 0, 1, 1])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), targets) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), targets) == 0.0


@pytest.mark.parametrize("targets", [[1, 1, 1], [0, 0, 0]])
def test_roc_auc_needs_both_classes(targets: list[int]) -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(torch.randn(3, 2), torch.tensor(targets))


def test_mean_std_uses_the_sample_standard_deviation() -> None:
    mean, std = mean_std([1.0, 2.0, 3.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(np.std([1, 2, 3, 6], ddof=1)) == pytest.approx((14 / 3) ** 0.5)
    assert mean_std([0.5]) == (0.5, 0.0)
    assert mean_std(np.array([2.0, 4.0])) == (3.0, pytest.approx(2**0.5))
