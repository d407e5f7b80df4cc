"""Attention transfer (Zagoruyko & Komodakis 2017, "Paying more attention to attention").

The attention map of an activation ``A`` ``(N, C, H, W)`` is the channel mean of ``|A|^p`` (p = 2),
flattened and L2-normalised per sample: ``Q = vec(mean_c |A_c|^p) / ‖·‖₂``, ``(N, H·W)``
(:func:`attention_map`). For pairs ``j`` of student and teacher layers of the same spatial size::

    loss = base(outputs, targets, *extras) + β/2 · Σ_j mean((Q_s,j − Q_t,j)²)

with the mean over the batch and the ``H·W`` positions, as in the authors' code (β = 1000 there).

Design: the method holds the live teacher (:class:`kdcourse.kd.features.TeacherFeatures`: frozen, eval
mode, no gradient) and runs it on the batch's ``inputs``; the student's activations come from ``fit``'s
forward hooks at :attr:`student_features`. Attention maps have no parameters: nothing but the student learns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse.kd.features import TeacherFeatures
from kdcourse.kd.method import CrossEntropy, Method

__all__ = ["AttentionTransfer", "attention_map"]


def attention_map(activation: Tensor, p: int = 2) -> Tensor:
    """``(N, C, H, W)`` → ``(N, H·W)`` float32: the channel mean of ``|A|^p``, each row of unit L2 norm."""
    if activation.dim() != 4:
        raise ValueError(f"an attention map needs activations (N, C, H, W), got shape {tuple(activation.shape)}")
    return F.normalize(activation.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


class AttentionTransfer(Method):
    """Attention transfer on ``pairs`` of (student module path, teacher module path), added to ``base``.

    Args:
        teacher: the trained teacher network (frozen here).
        pairs: ``[(student path, teacher path), …]``; each pair's activations ``(N, C, H, W)`` share ``H, W``
            (the channel counts may differ).
        beta: β ≥ 0; the attention term is ``β/2 · Σ_j`` of the pairs' mean squared map distances.
        p: the exponent of ``|A|`` (the paper's p = 2).
        base: the objective the term is added to: :class:`CrossEntropy` by default, or e.g. ``HintonKD``.
    """

    def __init__(self, teacher: nn.Module, pairs: Sequence[tuple[str, str]], *, beta: float = 1000.0, p: int = 2,
                 base: Method | None = None) -> None:
        super().__init__()
        if not pairs or not beta >= 0:
            raise ValueError(f"attention transfer needs at least one layer pair and a beta >= 0, got {list(pairs)} and {beta!r}")
        self.pairs = tuple((student, teacher_path) for student, teacher_path in pairs)
        self.student_features = tuple(student for student, _ in self.pairs)
        self.beta, self.p = float(beta), int(p)
        self.teacher = TeacherFeatures(teacher, [teacher_path for _, teacher_path in self.pairs])
        self.base = base if base is not None else CrossEntropy()

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, beta={self.beta}, p={self.p}"

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        teacher = self.teacher(inputs)
        distance = 0.0
        for student_path, teacher_path in self.pairs:
            mine, theirs = attention_map(features[student_path], self.p), attention_map(teacher[teacher_path], self.p)
            if mine.shape != theirs.shape:
                raise ValueError(f"the maps of {student_path!r} and {teacher_path!r} differ in size: {tuple(mine.shape)} "
                                 f"and {tuple(theirs.shape)} (the pair's activations need the same H and W)")
            distance = distance + (mine - theirs).pow(2).mean()
        return self.base(outputs, targets, *extras, inputs=inputs, features=features) + self.beta / 2 * distance
