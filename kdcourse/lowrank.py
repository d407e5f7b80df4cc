"""Low-rank structure of a student's first layer: nuclear-norm penalty and truncated-SVD factorisation.

A chapter trains the student with

    loss = α · KD + (1 − α) · CE + β · ‖W₁‖_*

where ``W₁`` ``(out, in)`` is the weight of the student's first ``nn.Linear`` and ``‖·‖_*`` the
nuclear norm (the sum of its singular values), the convex surrogate of the rank. The penalty pushes
small singular values to zero, so that afterwards ``W₁`` can be replaced by a rank-``r`` product
``U_r S_r V_rᵀ`` (two thinner layers, :func:`factorise_linear`) at little loss of accuracy. By the
Eckart–Young theorem this truncation is the best rank-``r`` approximation in Frobenius norm, with
error ``sqrt(Σ_{i>r} σ_i²)``. A dense layer costs ``in · out`` multiply-accumulates (MACs) per
sample, the factorised pair ``r · (in + out)`` (:func:`linear_macs`). The penalty is a
distillation method that wraps another (:class:`NuclearPenalty`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from kdcourse.kd.method import LossFn, Method, as_method

__all__ = [
    "nuclear_norm",
    "singular_values",
    "first_linear",
    "NuclearPenalty",
    "factorise_linear",
    "replace_first_linear",
    "linear_macs",
]


def _check_matrix(weight: Tensor) -> None:
    if weight.dim() != 2:
        raise ValueError(f"expected a weight matrix of shape (out, in), got shape {tuple(weight.shape)}")


def nuclear_norm(weight: Tensor) -> Tensor:
    """``‖W‖_*``: the sum of the singular values of ``weight`` ``(out, in)``, as a differentiable scalar.

    Its gradient is ``U Vᵀ`` (from the thin SVD ``W = U S Vᵀ``) where ``W`` has full rank; it stays
    finite when singular values coincide, and is a subgradient where some are zero.
    """
    _check_matrix(weight)
    return torch.linalg.matrix_norm(weight, ord="nuc")


def singular_values(weight: Tensor) -> Tensor:
    """Singular values of ``weight`` ``(out, in)``, ``(min(out, in),)`` float32 in descending order, no gradient."""
    _check_matrix(weight)
    return torch.linalg.svdvals(weight.detach().float())


def first_linear(model: nn.Module) -> nn.Linear:
    """The first ``nn.Linear`` of ``model`` in ``model.modules()`` order (the input layer of an MLP)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module
    raise ValueError(f"{type(model).__name__} has no nn.Linear layer")


class NuclearPenalty(Method):
    """``base(outputs, targets, *extras, …) + beta · ‖W‖_*`` for :func:`kdcourse.train.fit`, with ``W`` the
    weight ``(out, in)`` of a linear layer of the student.

    Args:
        base: the method the penalty is added to (e.g. :class:`kdcourse.kd.hinton.HintonKD`); a plain
            function ``fn(logits, targets, *extras)`` is wrapped by :func:`kdcourse.kd.method.as_method`.
        model: the network being trained; its layer is held (not owned: its weight is trained and saved
            with the model) and read at every call, so the penalty follows the training updates.
        beta: weight of the penalty, >= 0 (0 gives ``base`` unchanged). The penalty is added once per
            batch, not per sample, so ``beta`` is in units of the base loss (nats) per unit of nuclear norm.
        every: add the penalty on one call in ``every`` (the first, then every ``every``-th), weighted
            ``every · beta``, so that its average gradient per step is unchanged ("lazy"
            regularisation). The SVD behind the norm costs far more than an MLP step on a CPU
            (about 80 ms for a 784×784 matrix on two cores), so ``every > 1`` trades a noisier penalty
            gradient for speed. The returned value then includes the penalty on those calls only. The
            count of calls is part of the method's state, so a resumed run keeps the schedule.
        layer: module path of the ``nn.Linear`` in ``model``; default the first one (:func:`first_linear`).
    """

    def __init__(self, base: Method | LossFn, model: nn.Module, beta: float, every: int = 1, *, layer: str | None = None) -> None:
        super().__init__()
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta weights the nuclear-norm penalty and must be a finite number >= 0, got {beta!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (1 adds the penalty at every step), got {every!r}")
        linear = first_linear(model) if layer is None else model.get_submodule(layer)
        self.layer = layer if layer is not None else next(name for name, m in model.named_modules() if m is linear)
        self._linear = (linear,)  # in a tuple: the student's layer, not a submodule of the method
        self.base = as_method(base)
        self.beta, self.every, self.calls = float(beta), every, 0

    def extra_repr(self) -> str:
        return f"beta={self.beta}, every={self.every}, layer={self.layer!r}"

    def get_extra_state(self) -> dict[str, int]:
        return {"calls": self.calls}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.calls = state["calls"]

    def forward(self, outputs: Tensor, targets: Tensor, *extras: Tensor, inputs: Tensor | None = None,
                features: dict[str, Tensor] | None = None) -> Tensor:
        loss = self.base(outputs, targets, *extras, inputs=inputs, features=features)
        due = self.calls % self.every == 0
        self.calls += 1
        if self.beta == 0 or not due:
            return loss
        return loss + self.every * self.beta * nuclear_norm(self._linear[0].weight.float())


def factorise_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Rank-``rank`` truncated SVD of ``linear`` as two layers ``in → rank → out``.

    With ``W ≈ U_r S_r V_rᵀ``, the first layer (no bias) has weight ``S_r^½ V_rᵀ`` ``(rank, in)`` and
    the second weight ``U_r S_r^½`` ``(out, rank)`` and the original bias; splitting ``S_r`` evenly keeps
    both factors on the same scale for fine-tuning. At ``rank = min(in, out)`` the pair computes the
    same function as ``linear`` (up to rounding). The SVD is computed in float64; the new layers take
    the device and dtype of ``linear.weight``.
    """
    weight = linear.weight.detach()
    out_features, in_features = weight.shape
    if not isinstance(rank, int) or not 1 <= rank <= min(in_features, out_features):
        raise ValueError(
            f"rank must be an integer in [1, min(in, out)] = [1, {min(in_features, out_features)}] "
            f"for a {in_features}→{out_features} layer, got {rank!r}"
        )
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    factory = {"device": weight.device, "dtype": weight.dtype}
    down = nn.Linear(in_features, rank, bias=False, **factory)
    up = nn.Linear(rank, out_features, bias=linear.bias is not None, **factory)
    with torch.no_grad():
        down.weight.copy_(root.unsqueeze(1) * vh[:rank])
        up.weight.copy_(u[:, :rank] * root)
        if linear.bias is not None:
            up.bias.copy_(linear.bias.detach())
    return nn.Sequential(down, up)


def replace_first_linear(model: nn.Module, rank: int) -> nn.Module:
    """A deep copy of ``model`` whose first ``nn.Linear`` is replaced by :func:`factorise_linear` of it.

    ``model`` itself is left unchanged. Works for any module tree (e.g. the ``nn.Sequential`` of
    :func:`kdcourse.models.mnist_student`); the replaced layer becomes an ``nn.Sequential`` of two
    ``nn.Linear`` at the same place, so later calls of :func:`first_linear` find its first factor.
    """
    first_linear(model)  # raise before copying when there is nothing to replace
    clone = copy.deepcopy(model)
    name, layer = next((n, m) for n, m in clone.named_modules() if isinstance(m, nn.Linear))
    parent_name, _, child_name = name.rpartition(".")
    parent = clone.get_submodule(parent_name) if parent_name else clone
    setattr(parent, child_name, factorise_linear(layer, rank))
    return clone


def linear_macs(in_features: int, out_features: int, rank: int | None = None) -> int:
    """Multiply-accumulates per sample of a dense layer: ``in · out``, or ``rank · (in + out)`` when factorised.

    Bias additions are not counted (ptflops, :func:`kdcourse.costs.count_macs`, adds ``out`` for them).
    Factorising saves MACs only when ``rank < in · out / (in + out)``.
    """
    if in_features < 1 or out_features < 1:
        raise ValueError(f"in_features and out_features must be >= 1, got {in_features} and {out_features}")
    if rank is None:
        return in_features * out_features
    if not 1 <= rank <= min(in_features, out_features):
        raise ValueError(f"rank must lie in [1, min(in, out)] = [1, {min(in_features, out_features)}], got {rank}")
    return rank * (in_features + out_features)
