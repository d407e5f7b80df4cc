"""Intermediate features by module path, captured with forward hooks (as torchdistill does).

:func:`capture` hooks modules of a network for as long as a ``with`` block runs: ``fit`` uses it for
the features a method asks of the student (:attr:`kdcourse.kd.method.Method.student_features`).
:class:`TeacherFeatures` is the live teacher a feature method holds: frozen, always in eval mode,
run without gradient on the student's inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["capture", "TeacherFeatures"]


@contextlib.contextmanager
def capture(network: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """A dict that holds, after each forward pass of ``network``, the output of each module in ``paths``
    (names as in ``network.get_submodule``), by path. The hooks are removed on leaving the block, also on
    an exception; an unknown path raises ``AttributeError`` naming it before anything is hooked."""
    modules = {path: network.get_submodule(path) for path in paths}
    features: dict[str, Tensor] = {}

    def hook(path: str):  # noqa: ANN202 - a forward hook
        def store(module: nn.Module, args: tuple, output: Tensor) -> None:
            features[path] = output
        return store

    handles = [module.register_forward_hook(hook(path)) for path, module in modules.items()]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


class TeacherFeatures(nn.Module):
    """A trained network read at module ``paths``: calling it on inputs ``(N, ...)`` returns the outputs
    of those modules by path, computed in eval mode without gradient.

    Its parameters are frozen (``requires_grad=False``, so ``fit`` does not optimise them) and
    :meth:`train` leaves the network in eval mode (its BatchNorm statistics and dropout do not move).
    """

    def __init__(self, network: nn.Module, paths: Sequence[str]) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.paths = tuple(paths)
        for path in self.paths:
            network.get_submodule(path)  # an unknown path fails here, not at the first batch

    def extra_repr(self) -> str:
        return f"paths={self.paths}"

    def train(self, mode: bool = True) -> TeacherFeatures:
        super().train(mode)
        self.network.eval()
        return self

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        with capture(self.network, self.paths) as features:
            self.network(inputs)
        return dict(features)
