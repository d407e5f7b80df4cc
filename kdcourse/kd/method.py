"""The one interface of a distillation method: the objective that :func:`kdcourse.train.fit` minimises.

A method is a :class:`torch.nn.Module`, so that it can hold what it trains besides the student (the
regressor of FitNets) or what it reads from (a live teacher). ``fit`` calls it once per batch as::

    method(outputs, targets, *extras, inputs=inputs, features=features)

``outputs`` are the student's outputs exactly as the model returned them, ``targets`` the batch's
labels ``(N,)``, ``extras`` the batch's extra tensors (for example cached teacher logits ``(N, C)``),
``inputs`` the batch the student saw and ``features`` the outputs of the student's modules named in
:attr:`Method.student_features` (module paths as in ``model.get_submodule``), captured by forward
hooks during the student's forward pass. A method returns a scalar loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Method", "CrossEntropy"]


class Method(nn.Module):
    """Base of the distillation methods; subclasses implement :meth:`forward`.

    ``student_features``: module paths of the student whose outputs the method needs (empty for
    methods that read logits only). A method's trainable parameters (adapters) are trained with the
    student's; its hyper-parameters appear in :meth:`extra_repr`, which names the run it belongs to.
    """

    student_features: tuple[str, ...] = ()

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        raise NotImplementedError


class CrossEntropy(Method):
    """Training on the labels alone: ``CE(outputs, targets)`` on logits ``(N, C)``; extras are ignored."""

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        return F.cross_entropy(outputs.float(), targets)
