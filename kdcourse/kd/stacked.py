"""A grid of students trained together: identical fully connected students stacked into one module.

Identical fully connected students of a hyper-parameter grid can be trained together as one
:class:`StackedMLP`: every member has its own weights, temperature and α, and each layer of all
members is one batched matrix product. Because the summed loss of independent members has
independent gradients and Adam acts element-wise, each member follows the same trajectory as if
it had been trained alone (a unit test checks this). On a 2-core CPU a stack of four trains about
as fast per student as one student alone (``kdcourse bench``); stacking is meant for devices that
one small network cannot fill.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse.kd.hinton import check_alpha, check_temperature
from kdcourse.models import mlp

__all__ = ["StackedMLP", "grid_distillation_loss"]


class StackedMLP(nn.Module):
    """``G`` fully connected networks of one shape (as built by :func:`kdcourse.models.mlp`), run together.

    ``forward`` maps inputs ``(N, ...)`` to logits ``(G, N, C)``. Layer ``l`` keeps its weights as
    ``(G, in, out)`` and its biases as ``(G, 1, out)``, so every state tensor is indexed by member first.
    """

    def __init__(self, members: Sequence[nn.Sequential]) -> None:
        super().__init__()
        if not members:
            raise ValueError("StackedMLP needs at least one member")
        per_member = [[m for m in member if isinstance(m, nn.Linear)] for member in members]
        allowed = (nn.Linear, nn.ReLU, nn.Flatten)
        if any(not isinstance(m, allowed) for member in members for m in member):
            raise ValueError("StackedMLP members may contain only Flatten, Linear and ReLU layers (no dropout)")
        shapes = [[tuple(lin.weight.shape) for lin in linears] for linears in per_member]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"all members must have the same layer shapes, got {shapes}")
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([linears[l].weight.detach().t() for linears in per_member]).contiguous())
            for l in range(len(shapes[0]))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([linears[l].bias.detach() for linears in per_member]).unsqueeze(1))
            for l in range(len(shapes[0]))
        )

    @property
    def num_members(self) -> int:
        """Number of stacked networks ``G``."""
        return self.weights[0].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """Inputs ``(N, ...)`` (flattened to ``(N, in)``) → logits ``(G, N, C)``."""
        first_w, first_b = self.weights[0], self.biases[0]
        groups, width_in, width_out = first_w.shape
        # One wide product (N, in) @ (in, G·out) for the shared input, instead of G narrow ones.
        h = x.flatten(1) @ first_w.permute(1, 0, 2).reshape(width_in, groups * width_out)
        h = h.view(-1, groups, width_out).transpose(0, 1) + first_b
        for weight, bias in zip(self.weights[1:], self.biases[1:]):
            h = torch.baddbmm(bias, F.relu(h), weight)
        return h

    def member(self, index: int) -> nn.Sequential:
        """Member ``index`` as an ordinary :func:`kdcourse.models.mlp` (a copy, in eval mode)."""
        hidden = [w.shape[2] for w in self.weights[:-1]]
        model = mlp(hidden, in_features=self.weights[0].shape[1], num_classes=self.weights[-1].shape[2])
        linears = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for linear, weight, bias in zip(linears, self.weights, self.biases):
                linear.weight.copy_(weight[index].t())
                linear.bias.copy_(bias[index, 0])
        return model.eval()


def grid_distillation_loss(
    logits: Tensor,
    teacher: Tensor,
    targets: Tensor,
    temperatures: Tensor,
    alphas: Tensor,
) -> Tensor:
    """Per-member ``α_g · T_g² · KL(softmax(t/T_g) ‖ softmax(s_g/T_g)) + (1 − α_g) · CE(s_g, y)``.

    Args:
        logits: ``(G, N, C)`` logits of the stacked students.
        teacher: ``(N, C)`` teacher logits (detached).
        targets: ``(N,)`` labels.
        temperatures, alphas: ``(G,)`` per-member T > 0 and α in [0, 1].

    Returns:
        ``(G,)`` losses, member ``g`` equal to ``distillation_loss(logits[g], teacher, targets, T_g, α_g)``.
    """
    for t in temperatures.tolist():
        check_temperature(t)
    for a in alphas.tolist():
        check_alpha(a)
    if logits.dim() != 3 or logits.shape[0] != len(temperatures) or logits.shape[0] != len(alphas):
        raise ValueError(f"logits must be (G, N, C) with G = len(temperatures) = len(alphas), got {tuple(logits.shape)}")
    logits = logits.float()
    scale = temperatures.view(-1, 1, 1).to(logits)
    log_p_student = F.log_softmax(logits / scale, dim=-1)
    log_p_teacher = F.log_softmax(teacher.detach().float().unsqueeze(0) / scale, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean(-1) * temperatures.to(logits) ** 2
    cross_entropy = -F.log_softmax(logits, dim=-1).gather(-1, targets.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1).mean(-1)
    alphas = alphas.to(logits)
    return alphas * kl + (1 - alphas) * cross_entropy
