"""MHIST (3,152 colorectal polyp patches, 224×224 RGB, HP vs SSA): not downloadable, read from its release's layout.

``root/mhist/annotations.csv`` (the official file) names the images in ``root/mhist/images/``; each
is found as the CSV's name or as the same stem with the other extension (the release has .png, a
re-encoded copy .jpg). :func:`available` tells a missing data set (which a smoke run may replace by
:func:`write_generated_mhist`) from a damaged one (which must stop with its error).
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from kdcourse.data.containers import ImageData, ImageSplit
from kdcourse.data.decode import decode_all
from kdcourse.data.errors import CorruptDataError, MissingDataError
from kdcourse.data.generated import generated_source, mark_generated
from kdcourse.data.normalise import channel_stats
from kdcourse.data.splits import stratified_split
from kdcourse.paths import DATA_ENV, data_root

__all__ = ["MHIST_CLASSES", "MHIST_COLUMNS", "MHIST_IMAGE_SIZE", "MHIST_URL", "available", "load_mhist", "write_generated_mhist"]

MHIST_URL = "https://bmirds.github.io/MHIST/"
# the majority-vote labels in label order: hyperplastic polyp (0), sessile serrated adenoma (1)
MHIST_CLASSES = ("HP", "SSA")
# the header of the official annotations.csv: file name, majority label, SSA votes of the 7 pathologists, partition
MHIST_COLUMNS = ("Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA (Out of 7)", "Partition")
MHIST_ANNOTATORS = 7
MHIST_PARTITIONS = ("train", "test")
MHIST_IMAGE_SIZE = 224
MHIST_SUFFIXES = (".png", ".jpg")  # the release's files, and a re-encoded copy's


def _folder(root: str | os.PathLike[str] | None) -> Path:
    """The mhist folder: ``root`` itself when it holds annotations.csv, else ``root/mhist``."""
    base = data_root(root)
    return base if (base / "annotations.csv").is_file() else base / "mhist"


def _fix(folder: Path) -> str:
    return (f"MHIST cannot be downloaded: request it from its authors through the request form on the MHIST web site "
            f"({MHIST_URL}), then put the official annotations.csv at {folder / 'annotations.csv'} and the images in "
            f"{folder / 'images'} (the folder `root`/mhist; pass root=... or set {DATA_ENV}).")


def _read_mhist_csv(path: Path) -> tuple[list[str], list[int], list[int], list[str]]:
    """Image names, labels (HP = 0, SSA = 1), SSA votes and partitions of the rows of ``path``, checked.

    Two rows may not name the same image: names are compared by stem (``MHIST_aac.png`` and
    ``MHIST_aac.jpg`` are both the file ``MHIST_aac``), since that is how the images are found.
    """
    fix = f"Replace it with the official annotations.csv of the MHIST release ({MHIST_URL})."
    name_column, label_column, votes_column, partition_column = MHIST_COLUMNS
    names, labels, votes, partitions = [], [], [], []
    rows: dict[str, tuple[int, str]] = {}  # stem → (line, name) of the row that listed it first
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [column.strip() for column in reader.fieldnames or ()]
            missing = [column for column in MHIST_COLUMNS if column not in header]
            if missing:
                raise CorruptDataError(
                    f"{path} lacks the column(s) {missing}: its header is {header}, expected {list(MHIST_COLUMNS)}. {fix}"
                )
            reader.fieldnames = header
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                name, label, count, partition = ((row[column] or "").strip() for column in MHIST_COLUMNS)
                if not name:
                    raise CorruptDataError(f"{where}: the column '{name_column}' is empty. {fix}")
                stem = Path(name).stem
                if stem in rows:
                    line, first = rows[stem]
                    raise CorruptDataError(f"{where}: {name} is listed twice: line {line} lists {first}, the same image "
                                           f"{stem} (names are compared without their extension). {fix}")
                if label not in MHIST_CLASSES:
                    raise CorruptDataError(f"{where}: unknown label {label!r} in '{label_column}' (expected HP or SSA). {fix}")
                if not count.isdigit() or int(count) > MHIST_ANNOTATORS:
                    raise CorruptDataError(f"{where}: '{votes_column}' is {count!r}, expected a whole number from 0 to 7. {fix}")
                if (label == "SSA") != (int(count) > MHIST_ANNOTATORS // 2):
                    raise CorruptDataError(
                        f"{where}: the majority label {label} does not match {count} of 7 votes for SSA "
                        f"(SSA needs at least 4, HP at most 3). {fix}"
                    )
                if partition not in MHIST_PARTITIONS:
                    raise CorruptDataError(
                        f"{where}: unknown partition {partition!r} in '{partition_column}' (expected train or test). {fix}"
                    )
                rows[stem] = (reader.line_num, name)
                names.append(name)
                labels.append(MHIST_CLASSES.index(label))
                votes.append(int(count))
                partitions.append(partition)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CorruptDataError(f"cannot read {path} ({type(error).__name__}: {error}). {fix}") from error
    if not names:
        raise CorruptDataError(f"{path} lists no images. {fix}")
    return names, labels, votes, partitions


def _mhist_image_paths(csv_path: Path, names: list[str], fix: str) -> list[Path]:
    """The file of each listed image in ``csv_path``'s ``images/`` folder: the CSV's name, else the same stem as .png / .jpg."""
    images = csv_path.parent / "images"
    if not images.is_dir():
        raise MissingDataError(f"the MHIST images folder {images} does not exist. {fix}")
    paths, missing = [], []
    for name in names:
        tried = [images / name] + [images / Path(name).with_suffix(ext) for ext in MHIST_SUFFIXES if Path(name).suffix.lower() != ext]
        found = next((path for path in tried if path.is_file()), None)
        if found is None:
            missing.append(tried)
        paths.append(found)
    if missing:
        more = f" ({len(missing) - 1} more listed images are missing too)" if len(missing) > 1 else ""
        raise MissingDataError(
            f"the MHIST image {missing[0][0].name} listed in {csv_path} is missing: tried {' and '.join(map(str, missing[0]))}{more}. "
            f"Copy all images of the release into {images} (as .png, or re-encoded as .jpg with the same stem). {fix}"
        )
    return paths


def available(root: str | os.PathLike[str] | None = None) -> bool:
    """Whether MHIST is at ``root`` (resolved as :func:`load_mhist` does): False when it is missing (neither
    ``annotations.csv`` nor ``images/`` exists), True when the CSV is valid and every image it lists exists.

    Anything in between is a damaged copy, not a missing one, and raises what :func:`load_mhist` would
    (:class:`MissingDataError` naming the missing file, :class:`CorruptDataError` naming the bad one),
    so that a smoke run stands in generated images only for a data set that is not there at all.
    The images are not decoded here; :func:`load_mhist` checks each as it decodes it.
    """
    folder = _folder(root)
    csv_path = folder / "annotations.csv"
    if not csv_path.exists() and not (folder / "images").exists():
        return False
    fix = _fix(folder)
    if not csv_path.is_file():
        raise MissingDataError(f"MHIST in {folder} is incomplete: {folder / 'images'} exists but {csv_path} does not. {fix}")
    _mhist_image_paths(csv_path, _read_mhist_csv(csv_path)[0], fix)
    return True


def _decode_mhist_image(path: Path, size: int) -> Tensor:
    """The image at ``path`` as uint8 ``(3, size, size)``.

    It must be 224×224 RGB; it is then resized (bilinear, antialiased) when ``size`` differs.
    """
    from PIL import Image

    fix = "Replace it with the image of the same name from the MHIST release."
    expected = ("RGB", (MHIST_IMAGE_SIZE, MHIST_IMAGE_SIZE))
    try:
        with Image.open(path) as image:
            image.load()
            found = (image.mode, image.size)
            if found == expected:
                resized = image if size == MHIST_IMAGE_SIZE else image.resize((size, size), Image.BILINEAR)
                pixels = bytearray(resized.tobytes())
    except (OSError, SyntaxError, ValueError) as error:  # Pillow reports broken files with any of these
        raise CorruptDataError(f"cannot decode the MHIST image {path} ({type(error).__name__}: {error}). {fix}") from error
    if found != expected:
        raise CorruptDataError(f"the MHIST image {path} is {found[1][0]}×{found[1][1]} {found[0]}, expected 224×224 RGB. {fix}")
    return torch.frombuffer(pixels, dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


def load_mhist(
    root: str | os.PathLike[str] | None = None,
    *,
    size: int = MHIST_IMAGE_SIZE,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    limit: int | None = None,
    workers: int | None = None,
) -> ImageData:
    """Load MHIST as uint8 tensors ``(N, 3, size, size)`` with its labels (HP = 0, SSA = 1).

    Reads ``root/mhist/annotations.csv`` (``root`` may also be the mhist folder itself; default:
    :func:`kdcourse.paths.data_root`) and the images it names. The test split is the official
    ``test`` partition; a validation split stratified by label (``val_fraction`` of it, fixed by
    ``split_seed``) is carved from the official ``train`` partition and the rest is the training
    split, so model selection never sees the test set. Each split's ``names`` are the CSV's image
    names and ``extras["votes"]`` ``(N,)`` int64 how many of the 7 pathologists chose SSA (0–7);
    ``mean``/``std`` are the training images' channel statistics. All 3,152 images take about 0.47 GB at 224 px.

    Args:
        size: side of the returned images in pixels; images are checked to be 224×224 and then resized.
        limit: keep at most this many images per split (stratified, seeded), for quick smoke runs.
        workers: decoding threads (default: the number of CPUs, at most 8).

    Raises:
        MissingDataError: the CSV, the images folder or a listed image is absent; the message says how
            to obtain MHIST (it cannot be downloaded) and where to put it.
        CorruptDataError: the CSV is unreadable, lacks a column or has a bad row (unknown label or
            partition, votes outside 0–7 or against the majority label, an image listed twice), or an
            image does not decode or is not 224×224 RGB; the message names the file.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 pixel, got {size}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    folder = _folder(root)
    csv_path = folder / "annotations.csv"
    fix = _fix(folder)
    if not csv_path.is_file():
        raise MissingDataError(f"MHIST is not in {folder}: {csv_path} does not exist. {fix}")
    names, labels, votes, partitions = _read_mhist_csv(csv_path)
    y, v = torch.tensor(labels), torch.tensor(votes)
    in_train = torch.tensor([partition == "train" for partition in partitions])
    official_train, test = in_train.nonzero().squeeze(1), (~in_train).nonzero().squeeze(1)
    n_val = round(val_fraction * len(official_train))
    if not 0 < n_val < len(official_train):
        raise ValueError(
            f"val_fraction={val_fraction} of the {len(official_train)} training images in {csv_path} "
            "leaves no validation or no training image"
        )
    rest, held_out = stratified_split(y[official_train], n_val, split_seed)
    splits = [official_train[rest], official_train[held_out], test]
    if limit is not None:
        splits = [idx if len(idx) <= limit else idx[stratified_split(y[idx], limit, split_seed)[1]] for idx in splits]
    order = torch.cat(splits)
    selected = [names[i] for i in order.tolist()]
    x = decode_all(_mhist_image_paths(csv_path, selected, fix), functools.partial(_decode_mhist_image, size=size),
                   (3, size, size), workers)
    bounds = torch.tensor([0] + [len(idx) for idx in splits]).cumsum(0).tolist()
    train, val_split, test_split = (
        ImageSplit(x[a:b], y[order[a:b]], tuple(selected[a:b]), {"votes": v[order[a:b]]}) for a, b in zip(bounds, bounds[1:])
    )
    return ImageData(train, val_split, test_split, MHIST_CLASSES, *channel_stats(train.x),
                     generated_source(folder, "MHIST") or "MHIST")


def write_generated_mhist(folder: str | os.PathLike[str], per_partition: int = 48, seed: int = 0) -> Path:
    """Write a small stand-in for MHIST in its real layout and return the ``mhist`` folder.

    ``folder/mhist/annotations.csv`` (the official columns) and ``folder/mhist/images/*.png``
    (224×224 RGB): ``per_partition`` images for each of train and test, 2/3 HP and 1/3 SSA, with
    votes consistent with the labels. The pictures are pink noise with purple blobs, denser for
    SSA, so that a network can learn something; they are **not** histology. Only for smoke runs
    and tests where MHIST itself is absent: :func:`load_mhist` says in ``source`` that they are generated.
    """
    from PIL import Image

    if per_partition < 6:
        raise ValueError(f"per_partition must be at least 6 (both classes in every split), got {per_partition}")
    root = Path(folder) / "mhist"
    (root / "images").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for partition in MHIST_PARTITIONS:
        for i in range(per_partition):
            ssa = i % 3 == 0
            votes = int(torch.randint(4, 8, (), generator=generator)) if ssa else int(torch.randint(0, 4, (), generator=generator))
            name = f"MHIST_{partition}{i:03d}.png"
            base = torch.tensor([235.0, 200.0, 215.0]).view(3, 1, 1)
            pixels = base + 12 * torch.randn(3, MHIST_IMAGE_SIZE, MHIST_IMAGE_SIZE, generator=generator)
            spots = torch.rand(1, MHIST_IMAGE_SIZE // 8, MHIST_IMAGE_SIZE // 8, generator=generator) < (0.25 if ssa else 0.1)
            spots = torch.nn.functional.interpolate(spots[None].float(), scale_factor=8.0)[0]
            pixels = pixels - spots * torch.tensor([90.0, 120.0, 40.0]).view(3, 1, 1)
            array = pixels.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
            Image.fromarray(array, "RGB").save(root / "images" / name)
            rows.append((name, MHIST_CLASSES[int(ssa)], votes, partition))
    with (root / "annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MHIST_COLUMNS)
        writer.writerows(rows)
    mark_generated(root, "MHIST")
    return root
