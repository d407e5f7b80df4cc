"""CIFAR-10 through torchvision, on small batches in the release's pickle format written here."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcourse.data import CIFAR10_CLASSES, CIFAR10_FILES, CorruptDataError, MissingDataError, load_cifar10

PER_BATCH = 40  # images per batch (the release has 10,000)


def write_cifar(root: Path, per_batch: int = PER_BATCH) -> Path:
    """The release's layout: five training batches, one test batch, batches.meta; each image encodes its batch and index."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b, name in enumerate(CIFAR10_FILES[:-1]):
        labels = [(i + b) % 10 for i in range(per_batch)]
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        data[:, 0] = b  # red channel, top-left pixel: the batch
        data[:, 1] = np.arange(per_batch)  # the next pixel: the index in the batch
        data[:, 1024] = np.asarray(labels) * 20  # green channel, top-left pixel: the label
        with (folder / name).open("wb") as handle:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(per_batch)]}, handle)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, handle)
    return folder


def test_loads_the_release_format_with_a_stratified_validation_split(tmp_path):
    write_cifar(tmp_path)
    data = load_cifar10(tmp_path, val_size=50, download=False)
    assert len(data.train) == 5 * PER_BATCH - 50 and len(data.val) == 50 and len(data.test) == PER_BATCH
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape[1:] == (3, 32, 32)
    for split in (data.train, data.val, data.test):  # images and labels stay aligned through the reshaping
        assert torch.equal(split.x[:, 1, 0, 0].long(), split.y * 20)
    assert (data.test.x[:, 0, 0, 0] == 5).all()  # the test batch, never the training batches
    assert torch.bincount(data.val.y, minlength=10).tolist() == [5] * 10
    # train and validation partition the training batches
    seen = {(int(x[0, 0, 0]), int(x[0, 0, 1])) for x in torch.cat([data.train.x, data.val.x])}
    assert len(seen) == 5 * PER_BATCH
    assert data.classes == CIFAR10_CLASSES


def test_missing_batches_are_named(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(MissingDataError, match="data_batch_3.*cifar-10-python.tar.gz"):
        load_cifar10(tmp_path, download=False)


def test_offline_download_gives_the_offline_recipe(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(MissingDataError, match="could not be downloaded.*extract it in"):
        load_cifar10(tmp_path)


def test_truncated_batch_is_named(tmp_path):
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptDataError, match="data_batch_2"):
        load_cifar10(tmp_path, download=False)


def test_batch_of_the_wrong_shape_is_named(tmp_path):
    folder = write_cifar(tmp_path)
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({"labels": [0, 1], "data": np.zeros((2, 100), dtype=np.uint8)}, handle)
    with pytest.raises(CorruptDataError, match="test_batch is not a CIFAR-10 batch"):
        load_cifar10(tmp_path, download=False)


def test_impossible_validation_size(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="val_size"):
        load_cifar10(tmp_path, val_size=5 * PER_BATCH, download=False)
