"""Data sets as in-memory tensors, validation splits and fast batch iteration.

MNIST is read through ``torchvision.datasets.MNIST`` and EuroSAT through
``torchvision.datasets.EuroSAT`` (both download when the network allows). Each is kept as one
float tensor per split, so training pays no per-sample Python overhead.
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
    "ImageData",
    "load_mnist",
    "EUROSAT_CLASSES",
    "load_eurosat",
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
class ImageData:
    """A data set split into train / validation / test (MNIST: validation carved from the official training set)."""

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
) -> ImageData:
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
    return ImageData(splits[True].subset(train_idx), splits[True].subset(val_idx), splits[False])


# the ten land-cover classes of EuroSAT (RGB), one folder each under eurosat/2750/, in ImageFolder's (sorted) order
EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
EUROSAT_IMAGE_SIZE = 64


def load_eurosat(
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 2700,
    test_size: int = 5400,
    split_seed: int = 0,
    download: bool = True,
) -> ImageData:
    """Load EuroSAT RGB (27,000 Sentinel-2 patches, 64×64, 10 classes) as normalised tensors ``(N, 3, 64, 64)``.

    The images are read with ``torchvision.datasets.EuroSAT`` from ``root/eurosat/2750/<class>/*.jpg``
    (``root`` defaults to :func:`kdcourse.paths.data_root`). EuroSAT has no official split: a random
    permutation fixed by ``split_seed`` gives ``test_size`` test and ``val_size`` validation images;
    the rest is the training split. Each channel is standardised with the mean and std of the
    training split.

    Raises:
        MissingDataError: the folder is absent and could not be downloaded; the message says where to put it.
        CorruptDataError: a class folder is missing or unexpected, an image cannot be decoded (named), or
            an image is not 64×64 RGB.
    """
    from PIL import Image
    from torchvision.datasets import EuroSAT

    folder = data_root(root)
    fix = (f"download EuroSAT.zip (RGB) and unpack it so that {folder / 'eurosat' / '2750'} holds one folder per class "
           f"({', '.join(EUROSAT_CLASSES)}), or set root=... / ${DATA_ENV}")
    try:
        dataset = EuroSAT(str(folder), download=download, loader=lambda p: p)
    except Exception as error:  # torchvision raises RuntimeError (not found) or URLError (offline)
        raise MissingDataError(f"EuroSAT is not in {folder / 'eurosat' / '2750'} and could not be downloaded "
                               f"({type(error).__name__}: {error}). To fix: {fix}") from error
    if tuple(dataset.classes) != EUROSAT_CLASSES:
        raise CorruptDataError(f"{dataset.root}/eurosat/2750 has the class folders {dataset.classes}, expected {list(EUROSAT_CLASSES)}. To fix: {fix}")
    n = len(dataset)
    if val_size < 1 or test_size < 1 or val_size + test_size >= n:
        raise ValueError(f"val_size ({val_size}) and test_size ({test_size}) must be >= 1 and leave training images of the {n}")
    images = torch.empty(n, 3, EUROSAT_IMAGE_SIZE, EUROSAT_IMAGE_SIZE, dtype=torch.uint8)
    for index, (path, _) in enumerate(dataset.samples):
        try:
            with Image.open(path) as image:
                array = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
                size = image.size
        except OSError as error:
            raise CorruptDataError(f"cannot decode the EuroSAT image {path} ({error}); re-extract the archive. To fix: {fix}") from error
        if size != (EUROSAT_IMAGE_SIZE, EUROSAT_IMAGE_SIZE):
            raise CorruptDataError(f"the EuroSAT image {path} is {size[0]}×{size[1]}, expected 64×64. To fix: {fix}")
        images[index] = array.reshape(EUROSAT_IMAGE_SIZE, EUROSAT_IMAGE_SIZE, 3).permute(2, 0, 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    test, val, train = order[:test_size], order[test_size : test_size + val_size], order[test_size + val_size :]
    x = images.float().div_(255.0)
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True)
    full = ImageSplit(x.sub_(mean).div_(std), torch.tensor(dataset.targets, dtype=torch.long))
    return ImageData(full.subset(train.sort().values), full.subset(val.sort().values), full.subset(test.sort().values))


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
