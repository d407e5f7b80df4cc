"""An ensemble teacher: several trained networks whose logits are averaged.

Hinton et al. distilled an ensemble into one network: members that err on different images make a
teacher stronger than any of them, and distillation is how its knowledge reaches a single small
model. Averaging logits (rather than probabilities) keeps the ensemble's output a logit vector that
any method of :mod:`kdcourse.kd` can soften with a temperature; its softmax is the normalised
geometric mean of the members' probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Ensemble", "average_logits"]


def average_logits(members: Sequence[Tensor]) -> Tensor:
    """The mean of the members' logits, each ``(..., K)`` of one shape (e.g. cached ``(V, N, K)``
    logits per training view); raises ValueError for no member or members of different shapes."""
    if len(members) == 0:
        raise ValueError("an ensemble needs at least one member")
    shapes = {tuple(m.shape) for m in members}
    if len(shapes) > 1:
        raise ValueError(f"ensemble members must give logits of one shape, got {sorted(shapes)}")
    return torch.stack([m.float() for m in members]).mean(0)


class Ensemble(nn.Module):
    """A frozen teacher made of ``members`` (modules mapping the same inputs to ``(N, K)`` logits):
    its forward pass returns their mean logits ``(N, K)``. The members are put in eval mode and their
    parameters frozen, so distilling from the ensemble never trains it."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Ensemble":
        """Stays in eval mode: a teacher's dropout and BatchNorm must not change while it teaches."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        return average_logits([member(x) for member in self.members])
