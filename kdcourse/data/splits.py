"""Seeded index splits: a random validation split and a split stratified by label."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["train_val_split", "stratified_split"]


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint random index tensors ``(train_idx, val_idx)`` covering ``range(n)``.

    The permutation depends only on ``seed`` (not on the global RNG), so every arm of a study and
    every training seed sees the same validation split.
    """
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and n - 1 = {n - 1}, got {val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def stratified_split(labels: Tensor, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint sorted index tensors ``(rest_idx, chosen_idx)`` with ``size`` chosen, stratified by ``labels``.

    Each class gets ``size × (its share of labels)`` chosen samples, rounded by largest remainder so
    that the counts add up to ``size``. The choice depends only on ``seed``, like :func:`train_val_split`.
    """
    n = len(labels)
    if not 0 < size < n:
        raise ValueError(f"size must be between 1 and n - 1 = {n - 1}, got {size}")
    classes, counts = labels.unique(sorted=True, return_counts=True)
    quotas = counts.double() * size / n
    taken = quotas.floor().long()
    by_remainder = (quotas - taken).argsort(descending=True, stable=True)
    taken[by_remainder[: size - int(taken.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, k in zip(classes.tolist(), taken.tolist()):
        members = (labels == label).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.cat(chosen)] = True
    return (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)
