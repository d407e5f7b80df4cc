"""The one interface of a distillation method: the objective that :func:`kdcourse.train.fit` minimises.

A method is a :class:`torch.nn.Module`, so that it can hold what it trains besides the student (the
regressor of FitNets) or what it reads from (a live teacher). ``fit`` calls it once per batch as::

    method(outputs, targets, *extras, inputs=inputs, features=features)

``outputs`` are the student's outputs exactly as the model returned them, ``targets`` the batch's
labels ``(N,)``, ``extras`` the batch's extra tensors (for example cached teacher logits ``(N, C)``),
``inputs`` the batch the student saw and ``features`` the outputs of the student's modules named in
:attr:`Method.student_features` (module paths as in ``model.get_submodule``), captured by forward
hooks during the student's forward pass. A method returns a scalar loss.

``fit`` registers those hooks for the run and removes them after it (:func:`kdcourse.kd.features.capture`),
moves the method to the training device, calls ``method.train()`` with the student, optimises the
method's parameters that require a gradient (adapters) together with the student's, in the same
parameter group, and saves the method's state in the run's checkpoint beside the model's. A method
that holds a live teacher keeps it frozen and in eval mode (:class:`kdcourse.kd.features.TeacherFeatures`).

A plain loss function ``fn(logits, targets, *extras)`` becomes a method through :func:`as_method`
(:class:`LossFunction`), which calls it as ``fit`` always has: on the outputs cast to float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse import checkpoints

__all__ = ["Method", "CrossEntropy", "LossFunction", "as_method"]

LossFn = Callable[..., Tensor]


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
    """Training on the labels alone: ``CE(outputs, targets)`` on logits ``(N, C)``, in nats per sample; extras are ignored.

    ``label_smoothing`` ε in [0, 1) replaces each one-hot target by ``(1 − ε) · onehot + ε / C``, as
    :func:`torch.nn.functional.cross_entropy` does; 0 (the default) is the plain loss.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def extra_repr(self) -> str:  # the plain loss keeps the description (and the runs) it always had
        return f"label_smoothing={self.label_smoothing}" if self.label_smoothing else ""

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)


class LossFunction(Method):
    """A plain loss function as a method: ``fn(outputs.float(), targets, *extras)``, exactly the call that
    ``fit`` made before methods existed (so runs trained with functions give the same numbers)."""

    def __init__(self, fn: LossFn) -> None:
        super().__init__()
        self.fn = fn

    def extra_repr(self) -> str:
        return checkpoints.describe_callable(self.fn)

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        return self.fn(outputs.float(), targets, *extras)


def as_method(loss: Method | LossFn | None) -> Method:
    """``loss`` as a :class:`Method`: a method itself, ``None`` as :class:`CrossEntropy`, a function as :class:`LossFunction`."""
    if loss is None:
        return CrossEntropy()
    if isinstance(loss, Method):
        return loss
    return LossFunction(loss)
