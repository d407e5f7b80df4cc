"""Harder training sets for the robustness sweeps of the TL+KD study: less data, noisy labels, occlusions.

Every function draws its randomness from a seeded ``torch.Generator``, so a sweep level is the same
set of images, labels and patches for every arm that trains on it (the arms stay paired).

- :func:`training_fraction`: a stratified subset of the training images;
- :func:`noisy_labels`: exactly ``round(rate · N)`` labels replaced by a *different* random class;
- :func:`center_black`: a black square of random side at the centre of each image (the thesis's
  CenterBlack: side in [200, 224) px on 224-px images);
- :func:`quarter_black`: one of the four quarters of each image blacked out (QuarterBlack);
- :func:`corrupt_fraction`: apply one of these occlusions to a random fraction of the images.

Images are uint8 ``(N, C, H, W)`` (black is 0) or float; the occlusions return a new tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from kdcourse.data import stratified_split

__all__ = ["training_fraction", "noisy_labels", "center_black", "quarter_black", "corrupt_fraction"]

Occlusion = Callable[[Tensor, torch.Generator], Tensor]


def _check_fraction(name: str, value: float, allow_zero: bool = True) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        raise ValueError(f"{name} must lie in {'[0' if allow_zero else '(0'}, 1], got {value}")


def training_fraction(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Sorted indices of a class-stratified ``fraction`` of the samples (all of them for 1.0)."""
    _check_fraction("fraction", fraction, allow_zero=False)
    n = len(labels)
    size = round(fraction * n)
    if size >= n:
        return torch.arange(n)
    if size < len(labels.unique()):
        raise ValueError(f"a fraction of {fraction} keeps {size} of {n} samples, fewer than one per class")
    return stratified_split(labels, size, seed)[1]


def noisy_labels(labels: Tensor, rate: float, num_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Labels with exactly ``round(rate · N)`` entries replaced by another class (uniform among the others).

    Returns ``(noisy, flipped)``: the new labels ``(N,)`` and the sorted indices that were changed."""
    _check_fraction("rate", rate)
    if num_classes < 2:
        raise ValueError(f"label noise needs at least two classes, got {num_classes}")
    n = len(labels)
    flipped = torch.randperm(n, generator=generator)[: round(rate * n)].sort().values
    shift = torch.randint(1, num_classes, (len(flipped),), generator=generator)  # never 0: always another class
    noisy = labels.clone()
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"occlusions need square images (N, C, H, H), got shape {tuple(x.shape)}")


def center_black(x: Tensor, generator: torch.Generator, low: int = 200, high: int = 224) -> Tensor:
    """Each image with a black square of its own random side in ``[low, high)`` px at its centre.

    The square covers rows and columns ``[(H − s) // 2, (H − s) // 2 + s)``. Needs ``low < high ≤ H``."""
    _check_images(x)
    size = x.shape[-1]
    if not 1 <= low < high <= size:
        raise ValueError(f"CenterBlack needs 1 <= low < high <= image side {size}, got low={low}, high={high}")
    sides = torch.randint(low, high, (len(x),), generator=generator)
    starts = (size - sides) // 2
    grid = torch.arange(size)
    inside = (grid >= starts[:, None]) & (grid < (starts + sides)[:, None])  # (N, H)
    square = inside[:, :, None] & inside[:, None, :]  # (N, H, W)
    return x.masked_fill(square[:, None], 0)


def quarter_black(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image with one of its four quarters (``H/2 × H/2``, chosen at random) set to black."""
    _check_images(x)
    size = x.shape[-1]
    if size % 2:
        raise ValueError(f"QuarterBlack needs an even image side, got {size}")
    half = size // 2
    quarters = torch.randint(0, 4, (len(x),), generator=generator)
    grid = torch.arange(size)
    rows = (grid[None] >= (quarters // 2 * half)[:, None]) & (grid[None] < (quarters // 2 * half + half)[:, None])
    cols = (grid[None] >= (quarters % 2 * half)[:, None]) & (grid[None] < (quarters % 2 * half + half)[:, None])
    return x.masked_fill((rows[:, :, None] & cols[:, None, :])[:, None], 0)


def corrupt_fraction(x: Tensor, fraction: float, occlusion: Occlusion, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``x`` with ``occlusion`` applied to exactly ``round(fraction · N)`` random images.

    Returns ``(images, corrupted)``: the new images and the sorted indices of the occluded ones."""
    _check_fraction("fraction", fraction)
    chosen = torch.randperm(len(x), generator=generator)[: round(fraction * len(x))].sort().values
    out = x.clone()
    if len(chosen):
        out[chosen] = occlusion(x[chosen], generator)
    return out, chosen
