"""MNIST (handwritten digits, 28×28 greyscale), through ``torchvision.datasets.MNIST``, checked file by file."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

from kdcourse.data.containers import ImageData, ImageSplit
from kdcourse.data.errors import CorruptDataError, MissingDataError
from kdcourse.data.splits import train_val_split
from kdcourse.paths import DATA_ENV, data_root

__all__ = ["MNIST_MEAN", "MNIST_STD", "MNIST_CLASSES", "MNIST_FILES", "load_mnist"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

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


def _fix(raw: Path) -> str:
    return (f"Delete it and download MNIST again, or copy the four official uncompressed IDX files into {raw} "
            f"(the folder `root` / MNIST / raw; pass root=... or set {DATA_ENV}).")


def _ensure_mnist_files(root: Path, download: bool) -> None:
    raw = root / "MNIST" / "raw"
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
    dims = {name: _check_idx_file(raw / name, magic, shape, _fix(raw)) for name, (magic, shape) in MNIST_FILES.items()}
    for images, labels in MNIST_SPLITS.values():
        if dims[images][0] != dims[labels][0]:
            raise CorruptDataError(
                f"{raw / images} holds {dims[images][0]} images but {raw / labels} holds {dims[labels][0]} labels. {_fix(raw)}"
            )


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
        CorruptDataError: a file is truncated or of the wrong format, or holds a label outside 0–9;
            the message names it.
    """
    from torchvision.datasets import MNIST

    folder = data_root(root)
    _ensure_mnist_files(folder, download)
    raw = folder / "MNIST" / "raw"
    splits = {}
    for train, (_, labels_file) in zip((True, False), MNIST_SPLITS.values()):
        dataset = MNIST(str(folder), train=train, download=False)
        labels = dataset.targets.long()
        outside = (labels >= len(MNIST_CLASSES)).nonzero().squeeze(1)  # bytes, so never negative
        if len(outside):
            first = int(outside[0])
            raise CorruptDataError(f"{raw / labels_file} holds {len(outside)} label(s) outside 0–9 (the first: {int(labels[first])} "
                                   f"at index {first}). {_fix(raw)}")
        x = dataset.data.unsqueeze(1).float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)
        splits[train] = ImageSplit(x, labels)
    train_idx, val_idx = train_val_split(len(splits[True]), val_size, split_seed)
    return ImageData(splits[True].subset(train_idx), splits[True].subset(val_idx), splits[False],
                     MNIST_CLASSES, (MNIST_MEAN,), (MNIST_STD,), "MNIST")
