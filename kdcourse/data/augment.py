"""Batch augmentations, seeded by a ``torch.Generator``: random shifts (digits, photographs) and the square's symmetries (histology)."""

from __future__ import annotations

import torch
from torch import Tensor

from kdcourse.data.mnist import MNIST_MEAN, MNIST_STD

__all__ = ["random_shift", "augment_batch"]


def random_shift(x: Tensor, generator: torch.Generator, max_shift: int = 2, fill: float = (0.0 - MNIST_MEAN) / MNIST_STD,
                 mode: str = "constant") -> Tensor:
    """Translate each image of ``x`` ``(N, C, H, W)`` (any dtype) by its own random offset of up to ``max_shift``
    pixels in each direction.

    With ``mode="constant"`` uncovered pixels take ``fill`` (default: a black MNIST pixel after
    normalisation); with ``"reflect"`` they mirror the image's border (the translation of photographs
    in K. Jordan's "94% on CIFAR-10 in 3.29 seconds on a single GPU"; ``max_shift`` below H and W).
    Offsets are drawn from ``generator`` (a CPU generator), so the augmentation is reproducible.
    """
    if mode not in ("constant", "reflect"):
        raise ValueError(f"mode must be 'constant' or 'reflect', got {mode!r}")
    n, _, height, width = x.shape
    if mode == "reflect":
        padded = torch.nn.functional.pad(x, (max_shift,) * 4, mode="reflect")
    else:
        padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=fill)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1, 1), generator=generator).to(x.device)
    rows = (torch.arange(height, device=x.device).view(1, height, 1) + dy).expand(n, height, width)
    cols = (torch.arange(width, device=x.device).view(1, 1, width) + dx).expand(n, height, width)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, height, width)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def augment_batch(x: Tensor, generator: torch.Generator) -> Tensor:
    """Map each square image of ``x`` ``(N, C, H, H)`` (any dtype) by its own random flip / 90° rotation.

    Each image gets one of the 8 symmetries of the square (the dihedral group: 4 rotations, each
    with or without a horizontal flip; random horizontal and vertical flips plus a random rotation
    give the same 8, uniformly), drawn from ``generator`` (a CPU generator, also for ``x`` on a GPU).
    For histology: tissue on a slide has no canonical orientation, so all 8 views are equally
    valid, and they only permute pixels, so no interpolation blurs the image and its pixel
    statistics stay exactly the same. Images are grouped by their symmetry, so there is no
    per-image Python loop.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"augment_batch needs square images (N, C, H, H), got shape {tuple(x.shape)}")
    codes = torch.randint(0, 8, (len(x),), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for code in range(8):
        index = (codes == code).nonzero().squeeze(1)
        group = x[index].flip(-1) if code >= 4 else x[index]
        out[index] = group.rot90(code % 4, dims=(-2, -1))
    return out
