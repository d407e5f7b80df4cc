"""MHIST loader on small folders in the real layout (mhist/annotations.csv + mhist/images/), written by the tests;
histology augmentation and the uint8 → float batch transform."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdcourse.data import (
    MHIST_CLASSES,
    MHIST_COLUMNS,
    MHIST_URL,
    CorruptDataError,
    ImageTransform,
    MissingDataError,
    TensorBatches,
    augment_batch,
    load_mhist,
    normalise_images,
    stratified_split,
    write_generated_mhist,
)
from kdcourse.data.mhist import available
from kdcourse.paths import DATA_ENV

# (stem, label, SSA votes, partition): 10 HP + 5 SSA for training, 4 HP + 3 SSA for testing
ROWS = [(f"MHIST_{i:03d}", "HP", i % 4, "train") for i in range(10)]
ROWS += [(f"MHIST_{i:03d}", "SSA", 4 + i % 4, "train") for i in range(10, 15)]
ROWS += [(f"MHIST_{i:03d}", "HP", i % 4, "test") for i in range(15, 19)]
ROWS += [(f"MHIST_{i:03d}", "SSA", 4 + i % 4, "test") for i in range(19, 22)]
# the CSV names images .png (as the release does); these are stored as .jpg (a re-encoded copy) instead,
# and one row names a .jpg that is stored as .png
AS_JPG = {stem for stem, *_ in ROWS[::2]}
CSV_JPG = "MHIST_001"
TRAIN = {stem for stem, _, _, part in ROWS if part == "train"}
TEST = [stem for stem, _, _, part in ROWS if part == "test"]
WHITE = (slice(0, 112), slice(0, 56))  # a white block in the top-left corner: rows 0–111, columns 0–55


def colour(index: int, label: str, votes: int) -> tuple[int, int, int]:
    """The flat colour of image ``index``: it encodes the index, the label and the votes."""
    return (10 * index, 40 + 150 * (label == "SSA"), 20 * votes)


def image_pixels(index: int, label: str, votes: int, size: tuple[int, int] = (224, 224)) -> Image.Image:
    image = Image.new("RGB", size, colour(index, label, votes))
    image.paste((255, 255, 255), (0, 0, 56, 112))
    return image


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(MHIST_COLUMNS) if header is None else header)
        writer.writerows(rows)


def csv_rows() -> list[list[str]]:
    return [[f"{stem}.jpg" if stem == CSV_JPG else f"{stem}.png", label, str(votes), part] for stem, label, votes, part in ROWS]


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mhist_template")
    images = root / "mhist" / "images"
    images.mkdir(parents=True)
    write_csv(root / "mhist" / "annotations.csv", csv_rows())
    for index, (stem, label, votes, _) in enumerate(ROWS):
        pixels = image_pixels(index, label, votes)
        if stem in AS_JPG:
            pixels.save(images / f"{stem}.jpg", quality=95)
        else:
            pixels.save(images / f"{stem}.png")
    return root


@pytest.fixture
def root(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the small MHIST folder that a test may break."""
    return Path(shutil.copytree(template, tmp_path / "data"))


def by_name(data) -> dict[str, tuple[torch.Tensor, int, int]]:
    return {name.split(".")[0]: (split.x[i], int(split.y[i]), int(split.extras["votes"][i]))
            for split in (data.train, data.val, data.test) for i, name in enumerate(split.names)}


# ---------------------------------------------------------------- loading


def test_loads_png_and_jpg_images_with_their_labels_votes_and_names(template: Path) -> None:
    data = load_mhist(template, workers=2)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 7)
    for split in (data.train, data.val, data.test):
        assert split.x.shape == (len(split), 3, 224, 224) and split.x.dtype == torch.uint8
        assert split.y.dtype == torch.int64 and split.extras["votes"].dtype == torch.int64
        assert len(split.names) == len(split)
    samples = by_name(data)
    assert sorted(samples) == sorted(stem for stem, *_ in ROWS)
    for index, (stem, label, votes, _) in enumerate(ROWS):
        x, y, v = samples[stem]
        assert (y, v) == (int(label == "SSA"), votes)
        tolerance = 3 if stem in AS_JPG else 0
        assert (x[:, 200, 200] - torch.tensor(colour(index, label, votes))).abs().max() <= tolerance
        assert (x[:, 100, 20].int() - 255).abs().max() <= tolerance  # the white block is upright: rows × columns
        assert (x[:, 20, 100] - torch.tensor(colour(index, label, votes))).abs().max() <= tolerance
    assert f"{CSV_JPG}.jpg" in data.train.names + data.val.names
    part = data.test.subset(torch.tensor([4, 1]))
    assert part.names == (data.test.names[4], data.test.names[1]) and torch.equal(part.x[1], data.test.x[1])
    assert torch.equal(part.extras["votes"], data.test.extras["votes"][[4, 1]]) and torch.equal(part.y, data.test.y[[4, 1]])
    assert data.classes == ("HP", "SSA") and data.source == "MHIST"


def test_splits_follow_the_partition_and_validation_is_stratified_seeded_and_disjoint(template: Path) -> None:
    data = load_mhist(template, val_fraction=0.2, split_seed=0)
    assert [name.split(".")[0] for name in data.test.names] == TEST  # the official test partition, in CSV order
    train, val = set(data.train.names), set(data.val.names)
    assert train.isdisjoint(val)
    assert {name.split(".")[0] for name in train | val} == TRAIN
    assert torch.bincount(data.val.y, minlength=2).tolist() == [2, 1]  # 3 of 15: 10 HP → 2, 5 SSA → 1
    assert load_mhist(template, split_seed=0).val.names == data.val.names
    assert len({load_mhist(template, split_seed=seed).val.names for seed in range(5)}) > 1
    assert load_mhist(template, val_fraction=0.4).test.names == data.test.names


def test_mean_and_std_are_those_of_the_training_images(template: Path) -> None:
    data = load_mhist(template)
    x = data.train.x.double() / 255
    torch.testing.assert_close(torch.tensor(data.mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), rtol=0, atol=1e-9)
    torch.testing.assert_close(torch.tensor(data.std, dtype=torch.float64), x.std(dim=(0, 2, 3), correction=0), rtol=0, atol=1e-9)


def test_root_may_be_the_mhist_folder_or_come_from_the_environment(template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_mhist(template / "mhist").test.names == load_mhist(template).test.names
    monkeypatch.setenv(DATA_ENV, str(template))
    assert len(load_mhist().test) == 7


def test_size_resizes_after_checking_the_original(template: Path) -> None:
    data = load_mhist(template, size=32)
    assert data.train.x.shape == (12, 3, 32, 32)
    for index, (stem, label, votes, _) in enumerate(ROWS):
        x, _, _ = by_name(data)[stem]
        assert (x[:, 28, 28] - torch.tensor(colour(index, label, votes))).abs().max() <= 3


def test_limit_keeps_a_stratified_subset_of_each_split(template: Path) -> None:
    full = load_mhist(template)
    small = load_mhist(template, limit=4)
    assert (len(small.train), len(small.val), len(small.test)) == (4, 3, 4)
    for part, whole in ((small.train, full.train), (small.val, full.val), (small.test, full.test)):
        assert set(part.names) <= set(whole.names)
    assert torch.bincount(small.train.y, minlength=2).tolist() == [3, 1]  # 8 HP + 4 SSA → 4
    assert torch.bincount(small.test.y, minlength=2).tolist() == [2, 2]  # 4 HP + 3 SSA → 4


def test_bad_arguments_are_rejected(template: Path) -> None:
    for kwargs in ({"size": 0}, {"val_fraction": 1.0}, {"val_fraction": 0.01}, {"limit": 0}):
        with pytest.raises(ValueError):
            load_mhist(template, **kwargs)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("remove", ["mhist", "mhist/annotations.csv"])
def test_missing_data_says_how_to_obtain_mhist_and_where_to_put_it(root: Path, remove: str) -> None:
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(MissingDataError) as info:
        load_mhist(root)
    message = str(info.value)
    assert MHIST_URL in message and "request form" in message
    assert str(root / "mhist" / "annotations.csv") in message and str(root / "mhist" / "images") in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_images_folder_is_named(root: Path) -> None:
    shutil.rmtree(root / "mhist" / "images")
    with pytest.raises(MissingDataError, match="images") as info:
        load_mhist(root)
    assert MHIST_URL in str(info.value)


def test_unreadable_csv_is_named(root: Path) -> None:
    (root / "mhist" / "annotations.csv").write_bytes(b"Image Name,\xff\xfe\x00 broken\n")
    with pytest.raises(CorruptDataError, match="annotations.csv"):
        load_mhist(root)


def test_missing_column_is_named(root: Path) -> None:
    header = list(MHIST_COLUMNS[:3]) + ["Split"]
    write_csv(root / "mhist" / "annotations.csv", csv_rows(), header=header)
    with pytest.raises(CorruptDataError, match="annotations.csv.*Partition"):
        load_mhist(root)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        (1, "TA", "unknown label 'TA'"),
        (2, "8", "'8'"),
        (2, "-1", "'-1'"),
        (2, "many", "'many'"),
        (2, "3", "SSA does not match 3 of 7"),  # row 10 is SSA: needs at least 4 votes
        (3, "validation", "unknown partition 'validation'"),
        (0, "MHIST_000.png", "listed twice"),
        (0, "", "empty"),
    ],
)
def test_bad_row_raises_an_error_naming_the_file_and_line(root: Path, column: int, value: str, match: str) -> None:
    rows = csv_rows()
    rows[10][column] = value
    write_csv(root / "mhist" / "annotations.csv", rows)
    with pytest.raises(CorruptDataError, match=match) as info:
        load_mhist(root)
    assert f"{root / 'mhist' / 'annotations.csv'}, line 12" in str(info.value)  # line 1 is the header


def test_hp_with_a_majority_of_ssa_votes_is_rejected(root: Path) -> None:
    rows = csv_rows()
    rows[0][2] = "4"
    write_csv(root / "mhist" / "annotations.csv", rows)
    with pytest.raises(CorruptDataError, match="HP does not match 4 of 7"):
        load_mhist(root)


def test_csv_without_rows_is_rejected(root: Path) -> None:
    write_csv(root / "mhist" / "annotations.csv", [])
    with pytest.raises(CorruptDataError, match="annotations.csv lists no images"):
        load_mhist(root)


@pytest.mark.parametrize("partition", ["train", "test"])
def test_one_image_listed_twice_under_two_extensions_is_refused_naming_both_rows(root: Path, partition: str) -> None:
    rows = csv_rows()
    rows.append(["MHIST_003.jpg", "HP", "3", partition])  # line 2 + 3 lists MHIST_003.png: the same image
    write_csv(root / "mhist" / "annotations.csv", rows)
    with pytest.raises(CorruptDataError, match=r"line 24: MHIST_003.jpg is listed twice: line 5 lists MHIST_003.png"):
        load_mhist(root)


def test_missing_image_names_both_names_tried(root: Path) -> None:
    images = root / "mhist" / "images"
    (images / "MHIST_003.png").unlink()
    with pytest.raises(MissingDataError) as info:
        load_mhist(root)
    message = str(info.value)
    assert str(images / "MHIST_003.png") in message and str(images / "MHIST_003.jpg") in message
    assert "annotations.csv" in message


def test_image_that_does_not_decode_is_named(root: Path) -> None:
    path = root / "mhist" / "images" / "MHIST_004.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match="MHIST_004.jpg"):
        load_mhist(root, workers=1)


@pytest.mark.parametrize(("size", "mode", "found"), [((200, 224), "RGB", "200×224 RGB"), ((224, 224), "L", "224×224 L")])
def test_image_of_the_wrong_size_or_mode_is_named(root: Path, size: tuple[int, int], mode: str, found: str) -> None:
    path = root / "mhist" / "images" / "MHIST_005.png"
    image_pixels(5, "HP", 1, size).convert(mode).save(path)
    with pytest.raises(CorruptDataError, match=f"MHIST_005.png is {found}, expected 224×224 RGB"):
        load_mhist(root, size=64)


# ---------------------------------------------------------------- stratified split


def test_stratified_split_keeps_the_class_shares_and_is_seeded() -> None:
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    rest, chosen = stratified_split(labels, 20, seed=3)
    assert torch.bincount(labels[chosen]).tolist() == [14, 4, 2]
    assert set(rest.tolist()).isdisjoint(chosen.tolist()) and sorted(rest.tolist() + chosen.tolist()) == list(range(100))
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, stratified_split(labels, 20, seed=3)[1])
    assert not torch.equal(chosen, stratified_split(labels, 20, seed=4)[1])
    assert len(stratified_split(torch.tensor([0] * 5 + [1] * 2), 3)[1]) == 3  # remainders are rounded to the size
    with pytest.raises(ValueError, match="size"):
        stratified_split(labels, 100)


# ---------------------------------------------------------------- augmentation and batches


def dihedral(image: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a square image ``(C, H, H)``, by hand."""
    rotations = [image.rot90(k, dims=(1, 2)) for k in range(4)]
    return rotations + [r.flip(2) for r in rotations]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augmentation_keeps_the_pixel_values_of_each_image(dtype: torch.dtype) -> None:
    x = torch.randint(0, 256, (64, 3, 9, 9)).to(dtype)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)


def test_augmentation_draws_all_eight_symmetries() -> None:
    image = torch.arange(2 * 16).view(2, 4, 4)  # all pixels distinct, so all 8 symmetries differ
    out = augment_batch(image.expand(400, 2, 4, 4), torch.Generator().manual_seed(1))
    views = dihedral(image)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    found = [next(k for k, view in enumerate(views) if torch.equal(o, view)) for o in out]  # every output is one of the 8
    counts = torch.bincount(torch.tensor(found), minlength=8)
    assert (counts > 25).all()  # about 50 each


def test_augmentation_is_reproducible_with_a_seeded_generator() -> None:
    x = torch.rand(32, 3, 8, 8)
    first = augment_batch(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, augment_batch(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, augment_batch(x, torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="square"):
        augment_batch(torch.zeros(2, 3, 4, 5), torch.Generator())


def test_normalise_images() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalise_images(x, (0.0, 0.1, 0.5), (1.0, 0.2, 0.25))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[0.0, 0.5, 2.0]] * 2))
    with pytest.raises(ValueError, match="uint8"):
        normalise_images(x.float(), (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError):
        normalise_images(x, (0.0,), (1.0,))


def test_image_transform_batches_are_augmented_normalised_and_reproducible() -> None:
    x = torch.randint(0, 256, (20, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(20)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batches = TensorBatches(x, y, batch_size=8, seed=2, transform=ImageTransform(mean, std, device="cpu"))

    def epoch(e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches.set_epoch(e)
        return list(batches)

    first = epoch(1)
    for xb, yb in first:
        assert xb.dtype == torch.float32 and xb.shape == (len(yb), 3, 6, 6)
        reference = normalise_images(x[yb], mean, std)
        assert torch.allclose(xb.flatten(1).sort(dim=1).values, reference.flatten(1).sort(dim=1).values)
    assert not all(torch.equal(xb, normalise_images(x[yb], mean, std)) for xb, yb in first)  # some images were moved
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, epoch(1)))

    plain = TensorBatches(x, y, batch_size=8, shuffle=False, transform=ImageTransform(mean, std, augment=False))
    assert torch.equal(torch.cat([xb for xb, _ in plain]), normalise_images(x, mean, std))


# ---------------------------------------------------------------- missing or damaged: what a smoke run may replace


def test_available_is_false_only_when_mhist_is_not_there_at_all(root: Path, tmp_path: Path) -> None:
    assert available(root) and available(root / "mhist")
    assert not available(tmp_path / "nothing") and not available(tmp_path / "nothing" / "mhist")
    shutil.rmtree(root / "mhist")
    assert not available(root)


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        ("image", MissingDataError, "MHIST_003"),
        ("images folder", MissingDataError, "images"),
        ("csv", MissingDataError, "annotations.csv"),
        ("row", CorruptDataError, "unknown label 'TA'"),
    ],
)
def test_available_raises_for_a_damaged_copy(root: Path, damage: str, error: type, match: str) -> None:
    folder = root / "mhist"
    if damage == "image":
        (folder / "images" / "MHIST_003.png").unlink()
    elif damage == "images folder":
        shutil.rmtree(folder / "images")
    elif damage == "csv":
        (folder / "annotations.csv").unlink()
    else:
        rows = csv_rows()
        rows[4][1] = "TA"
        write_csv(folder / "annotations.csv", rows)
    with pytest.raises(error, match=match):
        available(root)


def test_generated_stand_in_is_available_and_says_it_is_generated(tmp_path: Path) -> None:
    folder = write_generated_mhist(tmp_path, per_partition=6)
    assert available(tmp_path)
    data = load_mhist(tmp_path, size=32, val_fraction=0.5)
    assert data.source == "generated stand-in for MHIST" and data.classes == MHIST_CLASSES
    assert ((data.test.extras["votes"] >= 4).long() == data.test.y).all()
    assert folder == tmp_path / "mhist"
