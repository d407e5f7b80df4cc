"""Shared fixtures: small MNIST files in the official IDX format, written by the tests themselves."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# the Hugging Face hub reads this when first imported: tests that ask for missing pretrained weights get
# the offline answer at once instead of retrying an unreachable network for a minute
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
# pixel (row, column) of every generated image that stores its label as label * LABEL_SCALE
LABEL_PIXEL, LABEL_SCALE = (0, 0), 20


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """Write ``array`` (uint8) as an uncompressed IDX file: big-endian magic, dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable 28×28 uint8 images and their labels.

    Class ``c`` is a bright 6×6 square at a class-specific place plus faint noise, so small networks
    can learn it; the label is also written into ``LABEL_PIXEL`` (``label * LABEL_SCALE``) so that
    tests can check that images and labels stay aligned.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = 3 + 7 * (label // 4), 3 + 7 * (label % 4)
        images[i, row : row + 6, col : col + 6] = 255
    images[:, LABEL_PIXEL[0], LABEL_PIXEL[1]] = labels * LABEL_SCALE
    return images, labels


def write_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Write the four MNIST IDX files under ``root / "MNIST" / "raw"``; returns ``root``."""
    raw = root / "MNIST" / "raw"
    for prefix, n, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_digits(n, split_seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, IMAGE_MAGIC)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, LABEL_MAGIC)
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A data root holding a small MNIST (300 training and 100 test images) in the official format."""
    return write_mnist(tmp_path / "data")



@pytest.fixture(scope="session")
def mnist_files() -> SimpleNamespace:
    """The IDX helpers above, for tests that write their own (possibly broken) MNIST files."""
    return SimpleNamespace(
        write_idx=write_idx, synthetic_digits=synthetic_digits, write_mnist=write_mnist,
        IMAGE_MAGIC=IMAGE_MAGIC, LABEL_MAGIC=LABEL_MAGIC, LABEL_PIXEL=LABEL_PIXEL, LABEL_SCALE=LABEL_SCALE,
    )
