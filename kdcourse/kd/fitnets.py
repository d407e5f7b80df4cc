"""FitNets hints (Romero et al. 2015, "FitNets: Hints for thin deep nets").

A regressor ``r`` (an adapter trained with the student, e.g. a 1×1 convolution) maps the output
``v`` of the student's *hint* layer to the shape of the output ``u`` of the teacher's *guided* layer,
and the student learns to make them equal::

    loss = base(outputs, targets, *extras) + weight · mean((r(v) − u)²)

(the paper's ``½‖u − r(v)‖²`` averaged over elements, as RepDistiller and torchdistill do). With
``base=None`` this is the paper's stage 1, hint training (only the student's layers up to the hint
layer and the regressor learn); stage 2 is ordinary distillation (:class:`kdcourse.kd.hinton.HintonKD`)
in a second ``fit``. With a base method both are trained together, weighted.

Design: the method holds the live teacher (:class:`kdcourse.kd.features.TeacherFeatures`: frozen, eval
mode, no gradient) and runs it on the batch's ``inputs``; the student's hint comes from ``fit``'s
forward hook at :attr:`student_features`. The teacher's weights are part of the method's state, so
they name the run and travel in its checkpoint with the regressor.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse.kd.features import TeacherFeatures
from kdcourse.kd.method import Method

__all__ = ["FitNets"]


class FitNets(Method):
    """Hint loss from the student's module ``hint`` to the teacher's module ``guided`` through ``regressor``.

    Args:
        teacher: the trained teacher network (frozen here).
        hint, guided: module paths in the student and the teacher; ``regressor(student[hint] output)``
            must have the shape of ``teacher[guided]``'s output, e.g. ``(N, C_t, H, W)``.
        regressor: the adapter, trained with the student.
        weight: λ ≥ 0 on the hint term.
        base: the objective the hint term is added to (e.g. ``CrossEntropy()``); ``None``: hints only.
    """

    def __init__(self, teacher: nn.Module, hint: str, guided: str, regressor: nn.Module, *, weight: float = 1.0,
                 base: Method | None = None) -> None:
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.student_features = (hint,)
        self.hint, self.guided, self.weight = hint, guided, float(weight)
        self.teacher = TeacherFeatures(teacher, (guided,))
        self.regressor = regressor
        self.base = base

    def extra_repr(self) -> str:
        return f"hint={self.hint!r}, guided={self.guided!r}, weight={self.weight}"

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        guided = self.teacher(inputs)[self.guided].float()
        regressed = self.regressor(features[self.hint].float())
        if regressed.shape != guided.shape:
            raise ValueError(f"the regressed hint has shape {tuple(regressed.shape)}, the guided layer {tuple(guided.shape)}")
        loss = self.weight * F.mse_loss(regressed, guided)
        if self.base is None:
            return loss
        return self.base(outputs, targets, *extras, inputs=inputs, features=features) + loss
