"""Data sets as in-memory tensors, validation splits and fast batch iteration.

MNIST is read through ``torchvision.datasets.MNIST`` (which downloads it when the network allows)
and kept as one float tensor, so training pays no per-sample Python overhead.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .paths import DATA_ENV, data_root

__all__ = [
    "MissingDataError",
    "CorruptDataError",
    "MNIST_MEAN",
    "MNIST_STD",
    "MNIST_FILES",
    "ImageSplit",
    "MnistData",
    "load_mnist",
    "train_val_split",
    "TensorBatches",
    "random_shift",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

# file name → (IDX magic number, shape after the header) of the official release. The loader checks
# the magic number, the 28×28 image size and that every file is complete, but accepts any number of
# images as long as the images and labels of a split agree (so a subset in the same format loads too).
MNIST_FILES: dict[str, tuple[int, tuple[int, ...]]] = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (10000,)),
}
# (images file, labels file) of each split
MNIST_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MissingDataError(FileNotFoundError):
    """A data set is not where the loader looked, and could not be downloaded."""


class CorruptDataError(ValueError):
    """A data file exists but is truncated or not in the expected format."""


@dataclass(frozen=True)
class ImageSplit:
    """Images ``x`` of shape ``(N, C, H, W)`` (float32, normalised) and labels ``y`` ``(N,)`` int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> "ImageSplit":
        """The samples at ``index`` (a 1-D index tensor)."""
        return ImageSplit(self.x[index], self.y[index])

    def head(self, n: int | None) -> "ImageSplit":
        """The first ``n`` samples (all of them when ``n`` is None)."""
        return self if n is None else ImageSplit(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class MnistData:
    """MNIST split into train / validation (carved from the official training set) / test."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit


def _check_idx_file(path: Path, magic: int, shape: tuple[int, ...], fix: str) -> tuple[int, ...]:
    """Check that ``path`` is a complete IDX file like ``shape`` and return its dimensions.

    The magic number, the number of dimensions and all dimensions but the first (the number of
    samples, which may be any) must match ``shape``, and the file size must equal the header plus
    one byte per element. Raises :class:`CorruptDataError` naming ``path`` otherwise.
    """
    header_size = 4 + 4 * len(shape)
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(header_size)
    if len(header) < header_size:
        raise CorruptDataError(f"{path} is truncated ({size} bytes, shorter than its {header_size}-byte header). {fix}")
    found_magic, *dims = struct.unpack(f">{1 + len(shape)}i", header)
    if found_magic != magic or tuple(dims[1:]) != shape[1:] or dims[0] < 0:
        raise CorruptDataError(
            f"{path} is not the expected MNIST IDX file (magic {found_magic}, shape {tuple(dims)}; "
            f"expected magic {magic}, shape (n, {', '.join(map(str, shape[1:]))})). {fix}"
        )
    expected = header_size + math.prod(dims)
    if size != expected:
        raise CorruptDataError(
            f"{path} has {size} bytes, but its header announces shape {tuple(dims)}, i.e. {expected} bytes "
            f"(truncated or corrupt). {fix}"
        )
    return tuple(dims)


def _ensure_mnist_files(root: Path, download: bool) -> None:
    raw = root / "MNIST" / "raw"
    fix = (
        f"Delete it and download MNIST again, or copy the four official uncompressed IDX files into {raw} "
        f"(the folder `root` / MNIST / raw; pass root=... or set {DATA_ENV})."
    )
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing and download:
        from torchvision.datasets import MNIST

        try:
            MNIST(str(root), train=True, download=True)
        except Exception as error:  # network errors come in many types; report them all the same way
            raise MissingDataError(
                f"MNIST is not in {raw} and downloading it failed ({type(error).__name__}: {error}). "
                f"On an offline machine copy the four uncompressed IDX files {sorted(MNIST_FILES)} into {raw}, "
                f"or point the loader at a folder that has them with root=... or {DATA_ENV}=..."
            ) from error
        missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing:
        raise MissingDataError(
            f"MNIST files {missing} are missing from {raw}. Copy the four uncompressed IDX files there, "
            f"pass root=... / set {DATA_ENV}=... to a folder that has MNIST/raw, or allow download=True."
        )
    dims = {name: _check_idx_file(raw / name, magic, shape, fix) for name, (magic, shape) in MNIST_FILES.items()}
    for images, labels in MNIST_SPLITS.values():
        if dims[images][0] != dims[labels][0]:
            raise CorruptDataError(
                f"{raw / images} holds {dims[images][0]} images but {raw / labels} holds {dims[labels][0]} labels. {fix}"
            )


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint random index tensors ``(train_idx, val_idx)`` covering ``range(n)``.

    The permutation depends only on ``seed`` (not on the global RNG), so every arm of a study and
    every training seed sees the same validation split.
    """
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and n - 1 = {n - 1}, got {val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
) -> MnistData:
    """Load MNIST as normalised float tensors ``(N, 1, 28, 28)`` with a validation split.

    Args:
        root: folder holding ``MNIST/raw/`` (see :func:`kdcourse.paths.data_root` for the default).
        val_size: number of official training images held out for validation (model selection).
        split_seed: seed of the validation split; fixed so that all runs share it.
        download: try to download the files when they are missing.

    Raises:
        MissingDataError: files absent and not downloadable; the message says where to put them.
        CorruptDataError: a file is truncated or of the wrong format; the message names it.
    """
    from torchvision.datasets import MNIST

    folder = data_root(root)
    _ensure_mnist_files(folder, download)
    splits = {}
    for train in (True, False):
        dataset = MNIST(str(folder), train=train, download=False)
        x = dataset.data.unsqueeze(1).float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)
        splits[train] = ImageSplit(x, dataset.targets.long())
    train_idx, val_idx = train_val_split(len(splits[True]), val_size, split_seed)
    return MnistData(splits[True].subset(train_idx), splits[True].subset(val_idx), splits[False])


class TensorBatches:
    """Shuffled mini-batches over tensors that share their first dimension.

    Iterating yields tuples ``(t[idx] for t in tensors)``. The order of epoch ``e`` depends only on
    ``(seed, e)``: call :meth:`set_epoch` (``fit`` does) so that a resumed run sees exactly the
    batches an uninterrupted one would. ``transform`` (optional) maps the first tensor of each batch,
    e.g. a data augmentation; it receives the batch and a seeded ``torch.Generator``.
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs at least one tensor, all of the same length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of epoch ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        n = len(self.tensors[0])
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            if self.transform is not None:
                batch = (self.transform(batch[0], generator), *batch[1:])
            yield batch


def random_shift(x: Tensor, generator: torch.Generator, max_shift: int = 2, fill: float = (0.0 - MNIST_MEAN) / MNIST_STD) -> Tensor:
    """Translate each image of ``x`` ``(N, C, H, W)`` by its own random offset of up to ``max_shift`` pixels.

    Uncovered pixels take ``fill`` (default: a black MNIST pixel after normalisation). Offsets are
    drawn from ``generator``, so the augmentation is reproducible.
    """
    n, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=fill)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1, 1), generator=generator)
    rows = (torch.arange(height).view(1, height, 1) + dy).expand(n, height, width)
    cols = (torch.arange(width).view(1, 1, width) + dx).expand(n, height, width)
    batch = torch.arange(n).view(n, 1, 1).expand(n, height, width)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
