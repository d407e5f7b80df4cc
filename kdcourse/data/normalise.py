"""uint8 images as normalised floats, and the per-channel statistics to normalise them with."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["normalise_images", "channel_stats"]


def normalise_images(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 images ``(N, C, H, W)`` (0–255) as float32 ``(x / 255 − mean) / std``.

    ``mean`` and ``std`` hold one value per channel, in [0, 1] units (e.g. :class:`kdcourse.data.ImageData`'s).
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or not len(mean) == len(std) == x.shape[1]:
        raise ValueError(f"normalise_images needs uint8 images (N, C, H, W) and C means and stds, got {x.dtype} {tuple(x.shape)}, "
                         f"{len(mean)} means, {len(std)} stds")
    shape = (1, -1, 1, 1)
    mean_tensor = torch.tensor(mean, device=x.device).view(shape)
    std_tensor = torch.tensor(std, device=x.device).view(shape)
    return x.float().div_(255.0).sub_(mean_tensor).div_(std_tensor)


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (population) of uint8 images ``x`` ``(N, C, H, W)`` in [0, 1]
    units, exact (from histograms)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in x.unbind(1):
        share = torch.bincount(channel.flatten(), minlength=256).double()
        share /= share.sum()
        mean = (share * levels).sum()
        means.append(mean.item())
        stds.append((share * (levels - mean).square()).sum().sqrt().item())
    return tuple(means), tuple(stds)
