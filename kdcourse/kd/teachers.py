"""Teacher outputs computed once: a teacher's logits on a fixed input set, cached by fingerprints.

When the inputs are not augmented, a teacher's logits on the training set never change, so they
are computed once (:func:`teacher_logits`) and fed to every student as a batch extra.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from kdcourse import checkpoints
from kdcourse.train import predict_logits

__all__ = ["teacher_logits"]


def teacher_logits(
    teacher: nn.Module,
    x: Tensor,
    *,
    cache: str | os.PathLike[str] | None = None,
    amp_dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """The teacher's logits ``(N, C)`` on inputs ``x`` (eval mode, float32), computed once.

    With ``cache``, the logits are read from that file when it holds the logits of this teacher (the
    fingerprint of its weights) on these inputs (the fingerprint of ``x``), and computed and written
    otherwise, so later runs and other chapters skip the teacher pass and a changed teacher or input
    never reuses stale logits. A damaged file raises :class:`kdcourse.checkpoints.CorruptCheckpointError`.
    """
    def compute() -> Tensor:
        return predict_logits(teacher, x, amp_dtype=amp_dtype, device=device)

    if cache is None:
        return compute()
    key = {"teacher": checkpoints.module_fingerprint(teacher), "inputs": checkpoints.tensor_fingerprint(x)}
    return checkpoints.cached(cache, key, compute)
