"""Fast mini-batches over in-memory tensors, and the transforms that augment and normalise uint8 image batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from kdcourse import checkpoints
from kdcourse.data.augment import augment_batch, random_shift
from kdcourse.data.normalise import normalise_images

__all__ = ["TensorBatches", "ImageTransform", "ShiftTransform"]


class TensorBatches:
    """Shuffled mini-batches over tensors that share their first dimension.

    Iterating yields tuples ``(t[idx] for t in tensors)``. The order of epoch ``e`` depends only on
    ``(seed, e)``: call :meth:`set_epoch` (``fit`` does) so that a resumed run sees exactly the
    batches an uninterrupted one would. ``transform`` (optional) maps the first tensor of each batch,
    e.g. a data augmentation; it receives the batch and a seeded ``torch.Generator``.

    ``alternating_flip`` (images ``(N, C, H, W)`` as the first tensor): each image is mirrored left to
    right in every other epoch, starting mirrored or not at random (fixed by ``seed``), before
    ``transform``: the derandomised flip of K. Jordan's "94% on CIFAR-10 in 3.29 seconds on a single
    GPU", which shows a network each image's two views in turn instead of at random.
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        alternating_flip: bool = False,
    ) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs at least one tensor, all of the same length")
        if alternating_flip and tensors[0].dim() != 4:
            raise ValueError(f"alternating_flip needs images (N, C, H, W) first, got shape {tuple(tensors[0].shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.alternating_flip = alternating_flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of epoch ``epoch``."""
        self.epoch = epoch

    def fingerprint(self) -> str:
        """What these batches hold and how they are drawn: a hash of the tensors, the batch settings,
        the seed and the transform (see :func:`kdcourse.checkpoints.tensor_fingerprint`)."""
        flips = ("alternating_flip",) if self.alternating_flip else ()  # only where used: older fingerprints stay the same
        settings = (self.batch_size, self.shuffle, self.seed, self.drop_last, *flips)
        return f"{checkpoints.tensor_fingerprint(*self.tensors)}{settings}{checkpoints.describe_callable(self.transform)}"

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        n = len(self.tensors[0])
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.alternating_flip:  # a generator of its own: the order and the transform's draws stay those without flips
            mirrored = (torch.rand(n, generator=torch.Generator().manual_seed(self.seed)) < 0.5) ^ bool(self.epoch % 2)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            if self.alternating_flip:
                batch = (torch.where(mirrored[idx].view(-1, 1, 1, 1), batch[0].flip(-1), batch[0]), *batch[1:])
            if self.transform is not None:
                batch = (self.transform(batch[0], generator), *batch[1:])
            yield batch


@dataclass(frozen=True)
class ImageTransform:
    """A ``transform`` for :class:`TensorBatches` over uint8 images (e.g. MHIST's or CIFAR-10's ``x``).

    Moves each batch to ``device`` (if given, so that the work below runs there), applies
    :func:`kdcourse.data.augment_batch` when ``augment`` is true (training) and returns
    :func:`kdcourse.data.normalise_images` of it: float32 ``(N, C, H, W)``. Use ``augment=False``
    for validation and test batches.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True
    device: str | torch.device | None = None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.device is not None:
            x = x.to(self.device, non_blocking=True)
        if self.augment:
            x = augment_batch(x, generator)
        return normalise_images(x, self.mean, self.std)


@dataclass(frozen=True)
class ShiftTransform:
    """A ``transform`` for :class:`TensorBatches` over uint8 photographs (e.g. CIFAR-10's ``x`` ``(N, 3, 32, 32)``).

    Moves each batch to ``device`` (if given), translates each image by its own random offset of up
    to ``max_shift`` pixels in each direction, the uncovered border mirrored
    (:func:`kdcourse.data.random_shift` with ``mode="reflect"``), and returns
    :func:`kdcourse.data.normalise_images` of it: float32 ``(N, C, H, W)``. For validation and test
    batches use :class:`ImageTransform` with ``augment=False``.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_shift: int = 2
    device: str | torch.device | None = None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.device is not None:
            x = x.to(self.device, non_blocking=True)
        return normalise_images(random_shift(x, generator, self.max_shift, mode="reflect"), self.mean, self.std)
