"""A linear probe: the reference that a head trained on frozen features should reach.

Standardised pooled features, L2-regularised logistic regression (scikit-learn), its strength chosen
by cross-validation on the training features alone (ROC AUC for two classes, accuracy for more). A convex problem solved to the optimum:
what a linear head on these features can do, with no learning rate, initialisation or epoch count
to get wrong.
"""

from __future__ import annotations

import warnings

import numpy as np
from torch import Tensor

__all__ = ["PROBE_CS", "linear_probe"]

PROBE_CS = tuple(float(c) for c in np.logspace(-4, 1, 11))  # inverse L2 strengths tried


def linear_probe(train: Tensor, labels: Tensor, *evaluated: Tensor, folds: int = 5,
                 cs: tuple[float, ...] = PROBE_CS) -> tuple[list[np.ndarray], float]:
    """Fit the probe on ``train`` ``(N, D)`` with ``labels`` ``(N,)`` of two or more classes, choosing C among
    ``cs`` by ``folds``-fold cross-validation on ``train`` only (AUC for two classes, accuracy for more);
    return its scores on each tensor of ``evaluated`` ``(M, D)``, the positive class's ``(M,)`` for two
    classes, else one per class ``(M, K)``, and the chosen C."""
    from sklearn.linear_model import LogisticRegressionCV  # imported here: scikit-learn is slow to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = len(set(labels.tolist()))
    if classes < 2:
        raise ValueError("a linear probe needs labels of at least two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(cs), cv=folds, max_iter=3000,
                                                                 scoring="roc_auc" if classes == 2 else "accuracy"))
    with warnings.catch_warnings():  # scikit-learn announces changes of defaults that this L2 probe does not use
        warnings.simplefilter("ignore", FutureWarning)
        probe.fit(train.float().numpy(), labels.numpy())
    return [probe.decision_function(x.float().numpy()) for x in evaluated], float(np.ravel(probe[-1].C_)[0])
