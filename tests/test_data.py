"""Tests of kdcourse.data and kdcourse.paths: MNIST loading, clear errors, splits and batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdcourse import data as kd_data
from kdcourse.data import (
    MNIST_MEAN,
    MNIST_STD,
    CorruptDataError,
    MissingDataError,
    TensorBatches,
    load_mnist,
    random_shift,
    train_val_split,
)
from kdcourse.paths import DATA_ENV, data_root


def label_from_pixel(x: torch.Tensor, files) -> torch.Tensor:
    """Undo the normalisation of the label pixel written by the fixture."""
    raw = x[:, 0, files.LABEL_PIXEL[0], files.LABEL_PIXEL[1]] * MNIST_STD + MNIST_MEAN
    return torch.round(raw * 255 / files.LABEL_SCALE).long()


# ---------------------------------------------------------------- loading


def test_load_mnist_shapes_types_and_normalisation(mnist_root: Path, mnist_files) -> None:
    dataset = load_mnist(mnist_root, val_size=50, download=False)
    assert dataset.train.x.shape == (250, 1, 28, 28)
    assert dataset.val.x.shape == (50, 1, 28, 28)
    assert dataset.test.x.shape == (100, 1, 28, 28)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (250, 50, 100)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.y.shape == (len(split),)

    # one known pixel: the test images come from the generator in file order
    images, labels = mnist_files.synthetic_digits(100, seed=1)
    expected = (images[7, 10, 20] / 255.0 - MNIST_MEAN) / MNIST_STD
    assert dataset.test.x[7, 0, 10, 20].item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(dataset.test.y, torch.from_numpy(labels.astype(np.int64)))
    # white and black pixels map to (1 − mean)/std and −mean/std
    assert dataset.test.x.max().item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, abs=1e-5)
    assert dataset.test.x[:, :, 27, 27].min().item() >= -MNIST_MEAN / MNIST_STD - 1e-5


def test_load_mnist_keeps_images_and_labels_aligned(mnist_root: Path, mnist_files) -> None:
    dataset = load_mnist(mnist_root, val_size=50, download=False)
    for split in (dataset.train, dataset.val, dataset.test):
        assert torch.equal(label_from_pixel(split.x, mnist_files), split.y)
    assert len(set(dataset.train.y.tolist())) == 10


def test_validation_split_is_disjoint_from_training_and_covers_the_official_training_set(mnist_root: Path, mnist_files) -> None:
    dataset = load_mnist(mnist_root, val_size=50, split_seed=3, download=False)
    images, labels = mnist_files.synthetic_digits(300, seed=0)
    official = torch.from_numpy(images).float().div(255).sub(MNIST_MEAN).div(MNIST_STD).unsqueeze(1)
    train_idx, val_idx = train_val_split(300, 50, seed=3)
    assert torch.equal(dataset.train.x, official[train_idx])
    assert torch.equal(dataset.val.x, official[val_idx])
    assert torch.equal(dataset.val.y, torch.from_numpy(labels.astype(np.int64))[val_idx])
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(300))


def test_load_mnist_uses_the_environment_variable_when_root_is_none(mnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(mnist_root))
    assert data_root() == mnist_root
    assert data_root(mnist_root / "elsewhere") == mnist_root / "elsewhere"
    dataset = load_mnist(None, val_size=50, download=False)
    assert len(dataset.train) == 250 and len(dataset.test) == 100


def test_data_root_falls_back_to_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_root() == tmp_path / "kdcourse" / "data"
    monkeypatch.setenv(DATA_ENV, "")
    assert data_root() == tmp_path / "kdcourse" / "data"


def test_missing_data_without_download_says_where_to_put_the_files(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    with pytest.raises(MissingDataError) as info:
        load_mnist(root, val_size=50, download=False)
    message = str(info.value)
    assert str(root / "MNIST" / "raw") in message
    assert DATA_ENV in message
    assert isinstance(info.value, FileNotFoundError)


def test_partially_missing_data_names_the_missing_files(mnist_root: Path) -> None:
    (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(MissingDataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(mnist_root, val_size=50, download=False)


def test_failed_download_reports_the_failure_and_where_to_put_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def offline_download(self) -> None:
        calls.append(self.root)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline_download)
    root = tmp_path / "offline"
    with pytest.raises(MissingDataError) as info:
        load_mnist(root, val_size=50, download=True)
    message = str(info.value)
    assert calls, "the loader should have tried to download"
    assert "download" in message and "failed" in message
    assert "Network is unreachable" in message
    assert str(root / "MNIST" / "raw") in message
    assert DATA_ENV in message
    assert isinstance(info.value.__cause__, OSError)


def test_download_is_not_attempted_when_the_files_are_there(mnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def no_download(self) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_download)
    assert len(load_mnist(mnist_root, val_size=50, download=True).test) == 100


def test_truncated_file_raises_corrupt_data_error_naming_it(mnist_root: Path) -> None:
    path = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    content = path.read_bytes()
    path.write_bytes(content[:-100])
    with pytest.raises(CorruptDataError) as info:
        load_mnist(mnist_root, val_size=50, download=False)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_file_shorter_than_its_header_raises_corrupt_data_error(mnist_root: Path) -> None:
    path = mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(mnist_root, val_size=50, download=False)


def test_wrong_magic_number_raises_corrupt_data_error(mnist_root: Path, mnist_files) -> None:
    path = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images, _ = mnist_files.synthetic_digits(100, seed=1)
    mnist_files.write_idx(path, images, 2049)  # the magic of a label file
    with pytest.raises(CorruptDataError, match="magic") as info:
        load_mnist(mnist_root, val_size=50, download=False)
    assert str(path) in str(info.value)


def test_wrong_image_size_raises_corrupt_data_error(mnist_root: Path, mnist_files) -> None:
    path = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    mnist_files.write_idx(path, np.zeros((100, 32, 32), dtype=np.uint8), mnist_files.IMAGE_MAGIC)
    with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte"):
        load_mnist(mnist_root, val_size=50, download=False)


def test_image_and_label_counts_of_a_split_must_agree(mnist_root: Path, mnist_files) -> None:
    images, _ = mnist_files.synthetic_digits(120, seed=1)
    mnist_files.write_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", images, mnist_files.IMAGE_MAGIC)
    with pytest.raises(CorruptDataError) as info:
        load_mnist(mnist_root, val_size=50, download=False)
    assert "120" in str(info.value) and "100" in str(info.value)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_label_outside_0_to_9_is_refused_naming_the_file(mnist_root: Path) -> None:
    path = mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[8 + 17] = 200  # after the 8-byte header: the label of image 17
    path.write_bytes(bytes(content))
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte holds 1 label.*outside 0–9.*200 at index 17") as info:
        load_mnist(mnist_root, val_size=50, download=False)
    assert str(path) in str(info.value)


def test_loaded_data_names_its_classes_normalisation_and_source(mnist_root: Path) -> None:
    dataset = load_mnist(mnist_root, val_size=50, download=False)
    assert dataset.classes == tuple("0123456789") and dataset.source == "MNIST"
    assert (dataset.mean, dataset.std) == ((MNIST_MEAN,), (MNIST_STD,))


def test_any_consistent_number_of_images_loads(tmp_path: Path, mnist_files) -> None:
    root = mnist_files.write_mnist(tmp_path, n_train=40, n_test=7)
    dataset = load_mnist(root, val_size=10, download=False)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (30, 10, 7)
    assert kd_data.MNIST_FILES["train-images-idx3-ubyte"] == (2051, (60000, 28, 28))  # the official shapes, for reference


# ---------------------------------------------------------------- splits


def test_train_val_split_is_a_deterministic_partition() -> None:
    train, val = train_val_split(100, 20, seed=0)
    assert len(train) == 80 and len(val) == 20
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    again_train, again_val = train_val_split(100, 20, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    _, other_val = train_val_split(100, 20, seed=1)
    assert not torch.equal(val, other_val)


def test_train_val_split_ignores_the_global_random_state() -> None:
    torch.manual_seed(0)
    _, first = train_val_split(100, 20, seed=5)
    torch.manual_seed(123)
    torch.rand(10)
    _, second = train_val_split(100, 20, seed=5)
    assert torch.equal(first, second)


@pytest.mark.parametrize("val_size", [0, 100, 101, -1])
def test_train_val_split_rejects_bad_sizes(val_size: int) -> None:
    with pytest.raises(ValueError, match="val_size"):
        train_val_split(100, val_size)


def test_image_split_subset_and_head() -> None:
    split = kd_data.ImageSplit(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    assert torch.equal(split.subset(torch.tensor([3, 1])).y, torch.tensor([3, 1]))
    assert len(split.head(4)) == 4 and torch.equal(split.head(4).x.flatten(), torch.arange(4.0))
    assert split.head(None) is split
    assert split.subset(torch.tensor([3, 1])).names is None and split.head(4).extras == {}


def test_image_split_keeps_names_and_extras_aligned() -> None:
    split = kd_data.ImageSplit(torch.arange(5.0).view(5, 1, 1, 1), torch.arange(5), tuple("abcde"), {"votes": torch.arange(5) * 10})
    part = split.subset(torch.tensor([4, 0]))
    assert part.names == ("e", "a") and torch.equal(part.extras["votes"], torch.tensor([40, 0]))
    assert torch.equal(part.x.flatten(), torch.tensor([4.0, 0.0]))
    head = split.head(2)
    assert head.names == ("a", "b") and torch.equal(head.extras["votes"], torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="votes"):
        kd_data.ImageSplit(split.x, split.y, None, {"votes": torch.arange(4)})
    with pytest.raises(ValueError, match="names"):
        kd_data.ImageSplit(split.x, split.y, ("a",))


# ---------------------------------------------------------------- batches


def epoch_indices(batches: TensorBatches, epoch: int) -> list[int]:
    batches.set_epoch(epoch)
    return [int(i) for (index,) in batches for i in index]


def test_tensor_batches_cover_every_index_once_per_epoch() -> None:
    batches = TensorBatches(torch.arange(103), batch_size=10, seed=4)
    for epoch in range(3):
        order = epoch_indices(batches, epoch)
        assert sorted(order) == list(range(103))
    sizes = [len(b[0]) for b in batches]
    assert sizes == [10] * 10 + [3]


def test_tensor_batches_order_depends_only_on_seed_and_epoch() -> None:
    first = TensorBatches(torch.arange(50), batch_size=8, seed=1)
    second = TensorBatches(torch.arange(50), batch_size=8, seed=1)
    torch.manual_seed(99)  # the global RNG plays no role
    assert epoch_indices(first, 2) == epoch_indices(second, 2)
    assert epoch_indices(first, 2) == epoch_indices(first, 2)
    assert epoch_indices(first, 2) != epoch_indices(first, 3)
    assert epoch_indices(first, 2) != epoch_indices(TensorBatches(torch.arange(50), batch_size=8, seed=2), 2)
    assert epoch_indices(first, 0) != list(range(50))


def test_tensor_batches_without_shuffle_keep_the_order() -> None:
    batches = TensorBatches(torch.arange(25), batch_size=10, shuffle=False)
    assert epoch_indices(batches, 5) == list(range(25))


def test_tensor_batches_keep_tensors_aligned() -> None:
    x = torch.arange(30).view(30, 1).float()
    y = torch.arange(30) * 2
    extra = torch.arange(30) * 3
    for xb, yb, eb in TensorBatches(x, y, extra, batch_size=7, seed=0):
        assert torch.equal(xb.view(-1).long() * 2, yb)
        assert torch.equal(xb.view(-1).long() * 3, eb)


@pytest.mark.parametrize(("n", "batch_size", "drop_last", "expected"), [(100, 10, False, 10), (101, 10, False, 11), (101, 10, True, 10), (9, 10, True, 0), (9, 10, False, 1)])
def test_tensor_batches_length(n: int, batch_size: int, drop_last: bool, expected: int) -> None:
    batches = TensorBatches(torch.arange(n), batch_size=batch_size, drop_last=drop_last)
    assert len(batches) == expected
    assert len(list(batches)) == expected
    if drop_last:
        assert all(len(b[0]) == batch_size for b in batches)


def test_tensor_batches_apply_the_transform_to_the_inputs_only() -> None:
    def negate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert isinstance(generator, torch.Generator)
        return -x

    for xb, yb in TensorBatches(torch.arange(10.0), torch.arange(10), batch_size=4, transform=negate):
        assert torch.equal(-xb, yb.float())


def test_tensor_batches_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TensorBatches()
    with pytest.raises(ValueError):
        TensorBatches(torch.arange(5), torch.arange(6))
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches(torch.arange(5), batch_size=0)


# ---------------------------------------------------------------- augmentation


def test_random_shift_keeps_the_shape_and_is_reproducible() -> None:
    x = torch.randn(6, 1, 28, 28)
    first = random_shift(x, torch.Generator().manual_seed(0), max_shift=2)
    second = random_shift(x, torch.Generator().manual_seed(0), max_shift=2)
    assert first.shape == x.shape
    assert torch.equal(first, second)
    assert not torch.equal(first, random_shift(x, torch.Generator().manual_seed(1), max_shift=2))


def test_random_shift_with_zero_shift_is_the_identity() -> None:
    x = torch.randn(4, 3, 10, 12)
    assert torch.equal(random_shift(x, torch.Generator().manual_seed(0), max_shift=0), x)


def test_random_shift_translates_each_image_and_fills_with_black() -> None:
    x = torch.zeros(50, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # a single bright pixel in the centre
    shifted = random_shift(x, torch.Generator().manual_seed(0), max_shift=2, fill=-1.0)
    positions = set()
    for image in shifted[:, 0]:
        rows, cols = torch.nonzero(image == 1.0, as_tuple=True)
        assert len(rows) == 1  # the pixel moved, it was not duplicated or lost
        assert abs(int(rows[0]) - 4) <= 2 and abs(int(cols[0]) - 4) <= 2
        positions.add((int(rows[0]), int(cols[0])))
    assert len(positions) > 5  # each image gets its own offset

    full = torch.ones(20, 1, 9, 9)
    moved = random_shift(full, torch.Generator().manual_seed(0), max_shift=2, fill=-1.0)
    assert set(moved.unique().tolist()) <= {-1.0, 1.0}
    assert (moved == -1.0).any()  # uncovered borders take the fill value
