"""CIFAR-10 through torchvision, on small batches in the release's pickle format written here, and as an
image-folder copy (train/<class>/*.jpg, test/<class>/*.jpg) of real JPEG files written here."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdcourse.data import (
    CIFAR10_CLASSES,
    CIFAR10_FILES,
    CIFAR10_SOURCES,
    CorruptDataError,
    MissingDataError,
    load_cifar10,
    write_generated_cifar10,
)
from kdcourse.paths import DATA_ENV, data_root

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
    assert data.classes == CIFAR10_CLASSES and data.source == CIFAR10_SOURCES["release"] == "CIFAR-10"


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


def test_generated_stand_in_says_it_is_generated(tmp_path):
    data = load_cifar10(write_generated_cifar10(tmp_path, per_batch=20), val_size=20, download=False)
    assert data.source == "generated stand-in for CIFAR-10" and len(data.test) == 20


# ---------------------------------------------------------------- the image-folder copy

TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 2


def class_colour(label: int, index: int) -> tuple[int, int, int]:
    """The flat colour of image ``index`` of class ``label``: red encodes the label, green the index."""
    return (20 * label + 10, 40 * index + 20, 128)


def write_copy(folder: Path, per_class: dict[str, int] | None = None) -> Path:
    """An image-folder copy in ``folder``: ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg``, real JPEGs of 32×32."""
    for split, n in (per_class or {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}).items():
        for label, name in enumerate(CIFAR10_CLASSES):
            (folder / split / name).mkdir(parents=True)
            for index in range(n):
                Image.new("RGB", (32, 32), class_colour(label, index)).save(folder / split / name / f"{index:04d}.jpg", quality=95)
    return folder


@pytest.fixture
def copy_root(tmp_path) -> Path:
    """A data root holding the copy in ``cifar10-jpeg/``, as the data folder of a development machine does."""
    write_copy(tmp_path / "cifar10-jpeg")
    return tmp_path


def test_loads_an_image_folder_copy_with_labels_from_the_class_folders(copy_root):
    data = load_cifar10(copy_root, val_size=10, download=False, workers=2)
    assert data.source == CIFAR10_SOURCES["copy"] == "CIFAR-10 (JPEG copy)" and data.classes == CIFAR10_CLASSES
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape[1:] == (3, 32, 32)
    assert torch.bincount(data.val.y, minlength=10).tolist() == [1] * 10
    assert torch.bincount(data.test.y, minlength=10).tolist() == [TEST_PER_CLASS] * 10
    for split in (data.train, data.val, data.test):  # each image carries its class folder's label
        red = split.x[:, 0].float().mean(dim=(1, 2))
        assert ((red - (20 * split.y + 10)).abs() <= 3).all()
    greens = sorted(int(x[1].float().mean().round()) for x in data.test.x[data.test.y == 3])
    assert [abs(g - e) <= 3 for g, e in zip(greens, (20, 60))] == [True, True]  # both test images of the class, once each
    torch.testing.assert_close(torch.tensor(data.mean[0]), data.train.x[:, 0].double().mean().float() / 255, atol=1e-6, rtol=0)


def test_the_copy_is_found_in_the_root_itself_and_through_the_environment(copy_root, monkeypatch):
    direct = load_cifar10(copy_root / "cifar10-jpeg", val_size=10, download=False)
    monkeypatch.setenv(DATA_ENV, str(copy_root))
    assert data_root() == copy_root
    through_env = load_cifar10(val_size=10, download=False)
    assert torch.equal(direct.test.x, through_env.test.x) and torch.equal(direct.train.y, through_env.train.y)


def test_the_release_is_read_when_both_forms_are_there(copy_root):
    write_cifar(copy_root)
    data = load_cifar10(copy_root, val_size=50, download=False)
    assert data.source == "CIFAR-10" and len(data.test) == PER_BATCH


def test_neither_form_names_both_places(tmp_path):
    with pytest.raises(MissingDataError, match="cifar-10-python.tar.gz.*image-folder copy.*cifar10-jpeg"):
        load_cifar10(tmp_path, download=False)


def test_missing_class_folder_is_named(copy_root):
    shutil.rmtree(copy_root / "cifar10-jpeg" / "test" / "frog")
    with pytest.raises(CorruptDataError, match=r"test has the class folders .*missing: \['frog'\]"):
        load_cifar10(copy_root, val_size=10, download=False)


def test_extra_class_folder_is_named(copy_root):
    shutil.copytree(copy_root / "cifar10-jpeg" / "train" / "cat", copy_root / "cifar10-jpeg" / "train" / "kitten")
    with pytest.raises(CorruptDataError, match=r"unexpected: \['kitten'\]"):
        load_cifar10(copy_root, val_size=10, download=False)


@pytest.mark.parametrize(("change", "count"), [("remove", TRAIN_PER_CLASS - 1), ("add", TRAIN_PER_CLASS + 1)])
def test_short_or_long_class_is_named(copy_root, change, count):
    folder = copy_root / "cifar10-jpeg" / "train" / "ship"
    if change == "remove":
        (folder / "0002.jpg").unlink()
    else:
        shutil.copy(folder / "0002.jpg", folder / "0099.jpg")
    with pytest.raises(CorruptDataError, match=rf"most hold {TRAIN_PER_CLASS}, but .*train/ship holds {count}\b"):
        load_cifar10(copy_root, val_size=10, download=False)


def test_image_of_the_wrong_size_is_named(copy_root):
    path = copy_root / "cifar10-jpeg" / "test" / "dog" / "0001.jpg"
    Image.new("RGB", (64, 32)).save(path)
    with pytest.raises(CorruptDataError, match="dog/0001.jpg is 64×32 RGB, expected 32×32 RGB"):
        load_cifar10(copy_root, val_size=10, download=False)


def test_greyscale_image_is_named(copy_root):
    path = copy_root / "cifar10-jpeg" / "train" / "bird" / "0000.jpg"
    Image.new("L", (32, 32)).save(path)
    with pytest.raises(CorruptDataError, match="bird/0000.jpg is 32×32 L, expected 32×32 RGB"):
        load_cifar10(copy_root, val_size=10, download=False)


@pytest.mark.parametrize("keep", [0, 40, 300])
def test_image_that_does_not_decode_is_named(copy_root, keep):
    path = copy_root / "cifar10-jpeg" / "train" / "horse" / "0003.jpg"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CorruptDataError, match="cannot decode the CIFAR-10 image .*horse/0003.jpg.*Restore the copy"):
        load_cifar10(copy_root, val_size=10, download=False, workers=1)


def test_stray_file_in_a_class_folder_is_named(copy_root):
    (copy_root / "cifar10-jpeg" / "train" / "deer" / "notes.txt").write_text("not an image")
    with pytest.raises(CorruptDataError, match="deer/notes.txt is not an image file"):
        load_cifar10(copy_root, val_size=10, download=False)


def test_missing_test_folder_is_named(copy_root):
    shutil.rmtree(copy_root / "cifar10-jpeg" / "test")
    with pytest.raises(CorruptDataError, match="has no test/ folder"):
        load_cifar10(copy_root, val_size=10, download=False)


REAL_COPY = data_root() / "cifar10-jpeg"


@pytest.mark.skipif(not (REAL_COPY / "train").is_dir(), reason=f"no CIFAR-10 image-folder copy in ${DATA_ENV}/cifar10-jpeg")
def test_the_real_copy_is_complete_in_the_release_order():
    data = load_cifar10(REAL_COPY.parent, val_size=5000, download=False)
    assert data.source == "CIFAR-10 (JPEG copy)" and data.classes == CIFAR10_CLASSES
    assert (len(data.train) + len(data.val), len(data.test)) == (50000, 10000)
    assert torch.bincount(torch.cat([data.train.y, data.val.y]), minlength=10).tolist() == [5000] * 10
    assert torch.bincount(data.test.y, minlength=10).tolist() == [1000] * 10
    assert sorted(path.name for path in (REAL_COPY / "train").iterdir()) == list(CIFAR10_CLASSES)  # alphabetical = label order
    # the release's channel means are 0.4914 / 0.4822 / 0.4465: a JPEG copy stays within a few thousandths
    assert all(abs(m - r) < 0.005 for m, r in zip(data.mean, (0.4914, 0.4822, 0.4465)))
