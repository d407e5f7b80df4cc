"""EuroSAT loader on small folders in the real layout (eurosat/2750/<class>/<class>_<n>.jpg), written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdcourse.data import EUROSAT_CLASSES, CorruptDataError, MissingDataError, load_eurosat

PER_CLASS = 6


def write_eurosat(root: Path, per_class: int = PER_CLASS, size: int = 64) -> Path:
    """A EuroSAT-shaped folder: ``per_class`` RGB JPEGs per class, each class with its own mean colour."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(EUROSAT_CLASSES):
        folder = root / "eurosat" / "2750" / name
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            base = np.array([20 * index, 255 - 20 * index, 128], dtype=np.float64)
            pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{name}_{n + 1}.jpg", quality=95)
    return root


def test_loads_splits_with_labels_from_the_class_folders(tmp_path: Path) -> None:
    data = load_eurosat(write_eurosat(tmp_path), val_size=10, test_size=12, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (38, 10, 12)
    assert data.train.x.shape == (38, 3, 64, 64) and data.train.x.dtype == torch.float32
    labels = torch.cat([data.train.y, data.val.y, data.test.y])
    assert torch.bincount(labels, minlength=10).tolist() == [PER_CLASS] * 10
    # standardised with the training split's statistics
    torch.testing.assert_close(data.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(data.train.x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    # the class colour survives: the red channel grows with the class index
    red = torch.stack([data.train.x[data.train.y == k, 0].mean() for k in range(10) if (data.train.y == k).any()])
    assert (red.diff() > 0).all()


def test_split_is_fixed_by_the_split_seed(tmp_path: Path) -> None:
    root = write_eurosat(tmp_path)
    a = load_eurosat(root, val_size=10, test_size=12, download=False)
    b = load_eurosat(root, val_size=10, test_size=12, download=False)
    c = load_eurosat(root, val_size=10, test_size=12, split_seed=1, download=False)
    torch.testing.assert_close(a.test.x, b.test.x)
    assert not torch.equal(a.test.y, c.test.y) or not torch.equal(a.test.x, c.test.x)


def test_missing_data_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="2750"):
        load_eurosat(tmp_path, download=False)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_eurosat(tmp_path)
    broken = root / "eurosat" / "2750" / "Forest" / "Forest_3.jpg"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(CorruptDataError, match="Forest_3.jpg"):
        load_eurosat(root, val_size=10, test_size=12, download=False)


def test_wrong_image_size_is_rejected(tmp_path: Path) -> None:
    root = write_eurosat(tmp_path)
    Image.new("RGB", (32, 32)).save(root / "eurosat" / "2750" / "River" / "River_1.jpg")
    with pytest.raises(CorruptDataError, match="River_1.jpg.*32×32"):
        load_eurosat(root, val_size=10, test_size=12, download=False)


def test_missing_class_folder_is_rejected(tmp_path: Path) -> None:
    root = write_eurosat(tmp_path)
    for path in (root / "eurosat" / "2750" / "SeaLake").iterdir():
        path.unlink()
    (root / "eurosat" / "2750" / "SeaLake").rmdir()
    with pytest.raises(CorruptDataError, match="class folders"):
        load_eurosat(root, val_size=10, test_size=12, download=False)


def test_impossible_split_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_size"):
        load_eurosat(write_eurosat(tmp_path), val_size=30, test_size=30, download=False)
