"""Distillation losses.

Convention used throughout the course (Hinton, Vinyals & Dean 2015):

    loss = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)

with α on the distillation term, the KL divergence averaged over the batch (``batchmean``) and no
gradient flowing into the teacher logits ``t``. The T² factor keeps the size of the soft-target
gradients roughly independent of T, so α keeps the same meaning when T changes.
"""

from __future__ import annotations

import math
import numbers

import torch.nn.functional as F
from torch import Tensor

from kdcourse.kd.method import Method

__all__ = ["HintonKD", "kd_loss", "distillation_loss", "soft_cross_entropy", "check_temperature", "check_alpha"]


def _is_number(value: object) -> bool:
    """A real number (Python, NumPy or a one-element tensor), but not a bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Real) or (isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex())


def check_temperature(temperature: float) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite number > 0."""
    if not _is_number(temperature) or not math.isfinite(float(temperature)) or float(temperature) <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_alpha(alpha: float) -> None:
    """Raise ``ValueError`` unless ``alpha`` lies in [0, 1]."""
    if not _is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(
            f"alpha weights the distillation term and must lie in [0, 1], got {alpha!r} "
            "(alpha=0 is plain cross-entropy, alpha=1 is pure distillation)"
        )


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must both have shape (batch, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Distillation term ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch.

    Args:
        student_logits: ``(N, C)`` raw scores of the student.
        teacher_logits: ``(N, C)`` raw scores of the teacher; detached, so no gradient reaches it.
        temperature: T > 0; both distributions are softened by the same T.

    Returns:
        A scalar tensor in nats (already multiplied by T²). Zero when the logits are equal.
    """
    check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · H(softmax(t/T), softmax(s/T))``, averaged over the batch.

    Equals :func:`kd_loss` plus ``T²`` times the teacher's entropy, which does not depend on the
    student: the gradients with respect to the student are identical, the loss values are not.
    """
    check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(p_teacher * log_p_student).sum(dim=1).mean() * temperature**2


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha · kd_loss + (1 − alpha) · cross_entropy(student_logits, targets)``.

    Args:
        student_logits: ``(N, C)`` student scores.
        teacher_logits: ``(N, C)`` teacher scores (no gradient flows into them).
        targets: ``(N,)`` integer class labels in ``[0, C)``.
        temperature: T > 0 of the distillation term (the cross-entropy uses T = 1).
        alpha: weight of the distillation term in [0, 1].
    """
    check_alpha(alpha)
    check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    if targets.shape != student_logits.shape[:1]:
        raise ValueError(
            f"targets must have shape ({student_logits.shape[0]},) to match the logits, got {tuple(targets.shape)}"
        )
    hard = F.cross_entropy(student_logits.float(), targets)
    if alpha == 0:
        return hard
    soft = kd_loss(student_logits, teacher_logits, temperature)
    return alpha * soft + (1.0 - alpha) * hard


class HintonKD(Method):
    """Hinton et al.'s objective as a method: :func:`distillation_loss` of the student's logits ``(N, C)``
    against the teacher's logits, the first batch extra ``(N, C)``."""

    def __init__(self, temperature: float, alpha: float) -> None:
        super().__init__()
        check_temperature(temperature)
        check_alpha(alpha)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"

    def forward(self, outputs: Tensor, targets: Tensor, teacher_logits: Tensor, *extras: Tensor,
                inputs: Tensor | None = None, features: dict[str, Tensor] | None = None) -> Tensor:
        return distillation_loss(outputs.float(), teacher_logits, targets, self.temperature, self.alpha)
