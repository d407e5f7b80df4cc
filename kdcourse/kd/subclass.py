"""Subclass distillation (Müller, Kornblith & Hinton 2020, "Subclass distillation").

When a task has few classes, the teacher's class probabilities carry little information. The
teacher is therefore given ``s`` subclass logits per class (``K = C·s`` outputs); the class
logits are their log-sum-exp over each class's ``s`` consecutive subclasses
(:func:`class_logits_from_subclasses`), so the teacher is trained with ordinary cross-entropy on
the classes, plus an auxiliary loss (:func:`subclass_auxiliary_loss`) that keeps it from putting
every example of a class into the same subclass. The student then matches the teacher's softened
*subclass* distribution (:func:`subclass_distillation_loss`).

Layout convention used throughout: class ``c`` owns the subclass indices ``c·s … c·s + s − 1``.
The paper's MNIST demo collapses the digits to two classes (0–4 and 5–9) with five subclasses
each (:func:`mnist_superclass`); in this layout digit ``d`` is exactly subclass index ``d``
(:func:`known_subclass_targets`), which lets the course ask whether learned subclasses rediscover
the digits (:func:`contingency`, :func:`subclass_digit_nmi`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcourse.kd.hinton import check_alpha, check_temperature, kd_loss
from kdcourse.kd.method import Method

__all__ = [
    "SubclassKD",
    "MNIST_SUBCLASSES_PER_CLASS",
    "class_logits_from_subclasses",
    "subclass_auxiliary_loss",
    "mnist_superclass",
    "known_subclass_targets",
    "subclass_distillation_loss",
    "subclass_assignments",
    "subclass_usage",
    "contingency",
    "subclass_digit_nmi",
]

# digits per class of the binary MNIST task (0–4 → class 0, 5–9 → class 1)
MNIST_SUBCLASSES_PER_CLASS = 5


def _check_subclass_logits(subclass_logits: Tensor, subclasses_per_class: int) -> None:
    if not isinstance(subclasses_per_class, int) or subclasses_per_class < 1:
        raise ValueError(f"subclasses_per_class must be an integer >= 1, got {subclasses_per_class!r}")
    if subclass_logits.dim() != 2:
        raise ValueError(
            f"subclass logits must have shape (batch, classes * subclasses_per_class), got {tuple(subclass_logits.shape)}"
        )
    width = subclass_logits.shape[1]
    if width == 0 or width % subclasses_per_class != 0:
        raise ValueError(
            f"the number of subclass logits ({width}) must be a positive multiple of "
            f"subclasses_per_class ({subclasses_per_class})"
        )


def class_logits_from_subclasses(subclass_logits: Tensor, subclasses_per_class: int) -> Tensor:
    """Class logits ``(N, C)`` from subclass logits ``(N, C·s)`` by log-sum-exp over each class's subclasses.

    Class ``c`` owns the ``s`` consecutive columns ``c·s … c·s + s − 1``. Because
    ``exp(logsumexp(z_c)) = Σ_j exp(z_cj)``, ``softmax(class logits)`` equals the subclass softmax
    probabilities summed within each class, computed stably in log space.
    """
    _check_subclass_logits(subclass_logits, subclasses_per_class)
    n, width = subclass_logits.shape
    grouped = subclass_logits.reshape(n, width // subclasses_per_class, subclasses_per_class)
    return torch.logsumexp(grouped, dim=2)


def subclass_auxiliary_loss(subclass_logits: Tensor, temperature: float = 1.0, eps: float = 1e-9) -> Tensor:
    """The paper's auxiliary ("negative sampling") loss that spreads examples over subclasses.

    Each example's ``K`` subclass logits are normalised to zero mean and unit (population)
    variance across its own ``K`` entries (per example, not per batch; ``eps`` is added to the
    variance), then scaled by ``1/sqrt(T·K)``, giving rows ``z_i`` of squared norm ``1/T``. With
    ``G = Z Zᵀ`` (``N × N``) the loss is::

        mean_i logsumexp_j G_ij − 1/T − log N  =  mean_i (−log softmax(G_i)_i) − log N

    i.e. the cross-entropy of recognising each example among the batch by its normalised logits
    (a contrastive, InfoNCE-style term), minus ``log N``, its value at chance. By Cauchy–Schwarz
    every ``G_ij ≤ G_ii = 1/T``, so the loss lies in ``[−log N, 0]`` and is **not positive**:

    * 0 (its maximum) when all rows are alike (collapsed: every example has the same logit
      pattern, so none can be told apart);
    * negative, approaching its lower bound, when examples' logit patterns are mutually
      dissimilar, e.g. ``N ≤ K`` one-hot rows on distinct subclasses give
      ``log(1 + (N − 1)·exp(−K / (T·(K − 1)))) − log N`` (−0.926 for ``N = K = 10``, T = 1).

    Minimising it therefore pushes examples apart in subclass space. It is invariant to adding a
    constant to, or multiplying by a positive number, an example's logits (up to ``eps``), and is
    0 for a batch of one. Smaller T sharpens the contrast (the paper's reference uses T = 1 on MNIST).

    Args:
        subclass_logits: ``(N, K)`` raw subclass scores, ``N ≥ 1`` and ``K ≥ 2``.
        temperature: T > 0.
        eps: ≥ 0, added to each example's variance before dividing (guards constant rows).

    Returns:
        A scalar tensor in nats.
    """
    check_temperature(temperature)
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if subclass_logits.dim() != 2:
        raise ValueError(f"subclass logits must have shape (batch, subclasses), got {tuple(subclass_logits.shape)}")
    n, k = subclass_logits.shape
    if n < 1 or k < 2:
        raise ValueError(f"the auxiliary loss needs at least one example and two subclasses, got shape {(n, k)}")
    logits = subclass_logits.float()
    mean = logits.mean(dim=1, keepdim=True)
    variance = logits.var(dim=1, unbiased=False, keepdim=True)
    normalized = (logits - mean) * torch.rsqrt(variance + eps) / math.sqrt(temperature * k)
    similarities = normalized @ normalized.t()
    return torch.logsumexp(similarities, dim=1).mean() - 1.0 / temperature - math.log(n)


def _check_digits(digits: Tensor) -> None:
    if digits.dim() != 1 or digits.dtype.is_floating_point or digits.dtype == torch.bool:
        raise ValueError(f"digits must be a 1-D integer tensor, got shape {tuple(digits.shape)} and {digits.dtype}")
    if digits.numel() and (int(digits.min()) < 0 or int(digits.max()) > 9):
        raise ValueError("digits must lie in 0..9")


def mnist_superclass(digits: Tensor) -> Tensor:
    """Binary class of the paper's MNIST demo: digits 0–4 → 0, 5–9 → 1; ``(N,)`` int64."""
    _check_digits(digits)
    return (digits >= MNIST_SUBCLASSES_PER_CLASS).long()


def known_subclass_targets(digits: Tensor) -> Tensor:
    """The digit as its known subclass index, ``(N,)`` int64, in the layout of :func:`class_logits_from_subclasses`.

    With ``subclasses_per_class = 5``, class ``c`` owns subclass indices ``5c … 5c + 4``; digit
    ``d`` lies in class ``d // 5`` (= :func:`mnist_superclass`) at position ``d % 5`` within it,
    so its subclass index ``5·(d // 5) + d % 5`` is ``d`` itself.
    """
    _check_digits(digits)
    return digits.long()


def subclass_distillation_loss(
    student_subclass_logits: Tensor,
    teacher_subclass_logits: Tensor,
    targets: Tensor,
    subclasses_per_class: int,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha · kd_loss(subclasses) + (1 − alpha) · cross_entropy(student class logits, targets)``.

    The distillation term is :func:`kdcourse.kd.hinton.kd_loss` on the ``(N, C·s)`` subclass logits
    (``T²``-scaled, batch-averaged KL, teacher detached); the hard term uses the student's class
    logits ``(N, C)`` from :func:`class_logits_from_subclasses` at T = 1.

    Args:
        student_subclass_logits: ``(N, C·s)`` student scores.
        teacher_subclass_logits: ``(N, C·s)`` teacher scores (no gradient flows into them).
        targets: ``(N,)`` integer class labels in ``[0, C)``.
        subclasses_per_class: ``s`` ≥ 1.
        temperature: T > 0 of the distillation term.
        alpha: weight of the distillation term in [0, 1].
    """
    check_alpha(alpha)
    check_temperature(temperature)
    if student_subclass_logits.shape != teacher_subclass_logits.shape:
        raise ValueError(
            "student and teacher subclass logits must have the same shape, got "
            f"{tuple(student_subclass_logits.shape)} and {tuple(teacher_subclass_logits.shape)}"
        )
    class_logits = class_logits_from_subclasses(student_subclass_logits.float(), subclasses_per_class)
    if targets.shape != class_logits.shape[:1]:
        raise ValueError(
            f"targets must have shape ({class_logits.shape[0]},) to match the logits, got {tuple(targets.shape)}"
        )
    hard = F.cross_entropy(class_logits, targets)
    if alpha == 0:
        return hard
    soft = kd_loss(student_subclass_logits, teacher_subclass_logits, temperature)
    return alpha * soft + (1.0 - alpha) * hard


def subclass_assignments(subclass_logits: Tensor, subclasses_per_class: int) -> Tensor:
    """Subclass index ``(N,)`` int64 of each example: the best subclass within its predicted class.

    The predicted class is the argmax of the class logits; this can differ from the overall argmax
    subclass (one strong subclass can lose to a class with several fairly strong ones).
    """
    _check_subclass_logits(subclass_logits, subclasses_per_class)
    n, width = subclass_logits.shape
    grouped = subclass_logits.detach().reshape(n, width // subclasses_per_class, subclasses_per_class)
    predicted = torch.logsumexp(grouped, dim=2).argmax(dim=1)
    within = grouped[torch.arange(n, device=grouped.device), predicted].argmax(dim=1)
    return predicted * subclasses_per_class + within


def _check_assignments(assignments: Tensor, num_subclasses: int) -> None:
    if not isinstance(num_subclasses, int) or num_subclasses < 1:
        raise ValueError(f"num_subclasses must be an integer >= 1, got {num_subclasses!r}")
    if assignments.dim() != 1 or assignments.numel() == 0 or assignments.dtype.is_floating_point:
        raise ValueError(f"assignments must be a non-empty 1-D integer tensor, got shape {tuple(assignments.shape)}")
    if int(assignments.min()) < 0 or int(assignments.max()) >= num_subclasses:
        raise ValueError(f"assignments must lie in 0..{num_subclasses - 1}")


def subclass_usage(assignments: Tensor, num_subclasses: int) -> Tensor:
    """Fraction of examples assigned to each subclass, ``(num_subclasses,)`` float, summing to 1."""
    _check_assignments(assignments, num_subclasses)
    counts = torch.bincount(assignments.long().cpu(), minlength=num_subclasses)
    return counts.double().div(assignments.numel()).float()


def contingency(assignments: Tensor, digits: Tensor, num_subclasses: int) -> Tensor:
    """Counts ``(num_subclasses, 10)`` int64: entry ``[k, d]`` is the number of digit-``d`` examples in subclass ``k``."""
    _check_assignments(assignments, num_subclasses)
    _check_digits(digits)
    if digits.shape != assignments.shape:
        raise ValueError(
            f"assignments and digits must have the same shape, got {tuple(assignments.shape)} and {tuple(digits.shape)}"
        )
    flat = assignments.long().cpu() * 10 + digits.long().cpu()
    return torch.bincount(flat, minlength=num_subclasses * 10).reshape(num_subclasses, 10)


def subclass_digit_nmi(assignments: Tensor, digits: Tensor) -> float:
    """Normalised mutual information in [0, 1] between subclass assignments and digits.

    1 when the subclasses are the digits up to a relabelling, 0 when they say nothing about them
    (scikit-learn's ``normalized_mutual_info_score``, arithmetic normalisation).
    """
    if assignments.dim() != 1 or assignments.shape != digits.shape or assignments.numel() == 0:
        raise ValueError(
            f"assignments and digits must be non-empty 1-D tensors of one shape, got {tuple(assignments.shape)} "
            f"and {tuple(digits.shape)}"
        )
    from sklearn.metrics import normalized_mutual_info_score  # imported here: scikit-learn is slow to import

    return float(normalized_mutual_info_score(digits.cpu().numpy(), assignments.cpu().numpy()))


class SubclassKD(Method):
    """Subclass distillation as a method: :func:`subclass_distillation_loss` of the student's subclass
    logits ``(N, C·s)`` against the teacher's, the first batch extra ``(N, C·s)``."""

    def __init__(self, subclasses_per_class: int, temperature: float, alpha: float) -> None:
        super().__init__()
        check_temperature(temperature)
        check_alpha(alpha)
        if subclasses_per_class < 1:
            raise ValueError(f"subclasses_per_class must be >= 1, got {subclasses_per_class}")
        self.subclasses_per_class = int(subclasses_per_class)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def extra_repr(self) -> str:
        return f"subclasses_per_class={self.subclasses_per_class}, temperature={self.temperature}, alpha={self.alpha}"

    def forward(self, outputs: Tensor, targets: Tensor, teacher_logits: Tensor, *extras: Tensor,
                inputs: Tensor | None = None, features: dict[str, Tensor] | None = None) -> Tensor:
        return subclass_distillation_loss(outputs.float(), teacher_logits, targets, self.subclasses_per_class,
                                          self.temperature, self.alpha)
