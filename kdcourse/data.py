"""Data sets as in-memory tensors, validation splits and fast batch iteration.

MNIST is read through ``torchvision.datasets.MNIST`` and EuroSAT through
``torchvision.datasets.EuroSAT`` (both download when the network allows). Each is kept as one
float tensor per split, so training pays no per-sample Python overhead. MHIST (histology, not
downloadable) is decoded once into uint8 tensors; :class:`ImageTransform` augments and normalises
it batch by batch.
"""

from __future__ import annotations

import csv
import math
import os
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from kdcourse import checkpoints
from kdcourse.paths import DATA_ENV, data_root

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
    "CIFAR10_CLASSES",
    "CIFAR10_FILES",
    "Cifar10Data",
    "load_cifar10",
    "MHIST_CLASSES",
    "MHIST_COLUMNS",
    "MHIST_IMAGE_SIZE",
    "MHIST_URL",
    "MhistSplit",
    "MhistData",
    "load_mhist",
    "write_generated_mhist",
    "write_generated_cifar10",
    "train_val_split",
    "stratified_split",
    "TensorBatches",
    "random_shift",
    "augment_batch",
    "normalise_images",
    "ImageTransform",
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
    """Images ``x`` of shape ``(N, C, H, W)`` and labels ``y`` ``(N,)`` int64; ``x`` is float32 and normalised
    (MNIST, EuroSAT) or uint8 0–255, to be normalised batch by batch (CIFAR-10)."""

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


def stratified_split(labels: Tensor, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint sorted index tensors ``(rest_idx, chosen_idx)`` with ``size`` chosen, stratified by ``labels``.

    Each class gets ``size × (its share of labels)`` chosen samples, rounded by largest remainder so
    that the counts add up to ``size``. The choice depends only on ``seed``, like :func:`train_val_split`.
    """
    n = len(labels)
    if not 0 < size < n:
        raise ValueError(f"size must be between 1 and n - 1 = {n - 1}, got {size}")
    classes, counts = labels.unique(sorted=True, return_counts=True)
    quotas = counts.double() * size / n
    taken = quotas.floor().long()
    by_remainder = (quotas - taken).argsort(descending=True, stable=True)
    taken[by_remainder[: size - int(taken.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, k in zip(classes.tolist(), taken.tolist()):
        members = (labels == label).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.cat(chosen)] = True
    return (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


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


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")


@dataclass(frozen=True)
class Cifar10Data:
    """CIFAR-10 as uint8 tensors: ``val`` is carved from the official training set, ``test`` is the official test set."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]


def _check_cifar_batch(path: Path, fix: str) -> None:
    """Raise :class:`CorruptDataError` naming ``path`` unless it is a CIFAR-10 batch (or the meta file) as pickled by the release."""
    import pickle

    try:
        with path.open("rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # truncated or foreign files raise several exception types
        raise CorruptDataError(f"cannot read the CIFAR-10 file {path} ({type(error).__name__}: {error}). {fix}") from error
    if path.name == "batches.meta":
        if not isinstance(entry, dict) or list(entry.get("label_names", [])) != list(CIFAR10_CLASSES):
            raise CorruptDataError(f"{path} does not list the ten CIFAR-10 class names. {fix}")
        return
    data, labels = (entry.get("data"), entry.get("labels")) if isinstance(entry, dict) else (None, None)
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != 3 * 32 * 32 or labels is None or len(labels) != shape[0]:
        raise CorruptDataError(f"{path} is not a CIFAR-10 batch: it needs 'data' of shape (N, 3072) and N 'labels', "
                               f"got data of shape {shape} and {None if labels is None else len(labels)} labels. {fix}")
    if any(not 0 <= int(label) < 10 for label in labels):
        raise CorruptDataError(f"{path} holds labels outside 0–9. {fix}")


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
) -> Cifar10Data:
    """Load CIFAR-10 (60,000 RGB images of 32×32 in 10 classes) as uint8 tensors ``(N, 3, 32, 32)``.

    Reads the release's pickled batches in ``root/cifar-10-batches-py/`` through
    ``torchvision.datasets.CIFAR10``, which downloads them when they are absent and the network
    allows (``root`` defaults to :func:`kdcourse.paths.data_root`). Batches holding fewer images than
    the release's 10,000 load too (tests write such files). A validation split of ``val_size``
    images, stratified by class and fixed by ``split_seed``, is carved from the training batches:
    model selection and early stopping never see the test batch.

    Raises:
        MissingDataError: the batches are absent and could not be downloaded; says where to put them.
        CorruptDataError: a batch cannot be unpickled or is not in the release's format (named).
    """
    from torchvision.datasets import CIFAR10

    class _Cifar10(CIFAR10):
        # presence instead of the release's MD5 sums: the batches are checked below, so subsets load too
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    base = data_root(root)
    folder = base / CIFAR10_FOLDER
    fix = (f"Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it in {base} "
           f"(so that {folder} holds {', '.join(CIFAR10_FILES)}), or pass root=... / set ${DATA_ENV}.")
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing and not download:
        raise MissingDataError(f"CIFAR-10 is not complete in {folder}: {', '.join(missing)} missing. {fix}")
    splits = []
    for train in (True, False):
        try:
            dataset = _Cifar10(str(base), train=train, download=download and bool(missing))
        except (OSError, RuntimeError) as error:  # offline download, or files still absent
            still = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
            raise MissingDataError(f"CIFAR-10 is not in {folder} ({', '.join(still) or 'no batch'} missing) and could not be "
                                   f"downloaded ({type(error).__name__}: {error}). {fix}") from error
        except Exception as error:  # a batch that does not unpickle into the release's format
            for name in CIFAR10_FILES:
                _check_cifar_batch(folder / name, fix)
            raise CorruptDataError(f"cannot read CIFAR-10 from {folder} ({type(error).__name__}: {error}). {fix}") from error
        for name in (dataset.train_list if train else dataset.test_list):
            _check_cifar_batch(folder / name[0], fix)
        if tuple(dataset.classes) != CIFAR10_CLASSES:
            raise CorruptDataError(f"{folder / 'batches.meta'} names the classes {dataset.classes}, expected {list(CIFAR10_CLASSES)}. {fix}")
        splits.append(ImageSplit(torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(),
                                torch.tensor(dataset.targets, dtype=torch.long)))
    official_train, test = splits
    if not 0 < val_size < len(official_train):
        raise ValueError(f"val_size must leave training and validation images of the {len(official_train)}, got {val_size}")
    rest, held_out = stratified_split(official_train.y, val_size, split_seed)
    return Cifar10Data(official_train.subset(rest), official_train.subset(held_out), test, CIFAR10_CLASSES)


MHIST_URL = "https://bmirds.github.io/MHIST/"
# the majority-vote labels in label order: hyperplastic polyp (0), sessile serrated adenoma (1)
MHIST_CLASSES = ("HP", "SSA")
# the header of the official annotations.csv: file name, majority label, SSA votes of the 7 pathologists, partition
MHIST_COLUMNS = ("Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA (Out of 7)", "Partition")
MHIST_ANNOTATORS = 7
MHIST_PARTITIONS = ("train", "test")
MHIST_IMAGE_SIZE = 224


@dataclass(frozen=True)
class MhistSplit:
    """MHIST images ``x`` ``(N, 3, S, S)`` uint8 RGB (0–255), labels ``y`` ``(N,)`` int64 (HP = 0, SSA = 1),
    ``votes`` ``(N,)`` int64 (how many of the 7 pathologists chose SSA, 0–7) and the CSV's image ``names``."""

    x: Tensor
    y: Tensor
    votes: Tensor
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> "MhistSplit":
        """The samples at ``index`` (a 1-D index tensor)."""
        return MhistSplit(self.x[index], self.y[index], self.votes[index], tuple(self.names[i] for i in index.tolist()))


@dataclass(frozen=True)
class MhistData:
    """MHIST split into train / validation / test; validation is carved from the official training partition.

    ``mean`` and ``std`` are the per-channel statistics of the training images in [0, 1] units, for
    :class:`ImageTransform`.
    """

    train: MhistSplit
    val: MhistSplit
    test: MhistSplit
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _read_mhist_csv(path: Path) -> tuple[list[str], list[int], list[int], list[str]]:
    """Image names, labels (HP = 0, SSA = 1), SSA votes and partitions of the rows of ``path``, checked."""
    fix = f"Replace it with the official annotations.csv of the MHIST release ({MHIST_URL})."
    name_column, label_column, votes_column, partition_column = MHIST_COLUMNS
    names, labels, votes, partitions = [], [], [], []
    lines: dict[str, int] = {}
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
                if name in lines:
                    raise CorruptDataError(f"{where}: {name} is listed twice (also on line {lines[name]}). {fix}")
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
                lines[name] = reader.line_num
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
        tried = [images / name] + [images / Path(name).with_suffix(ext) for ext in (".png", ".jpg") if Path(name).suffix.lower() != ext]
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


def _decode_mhist(paths: list[Path], size: int, workers: int) -> Tensor:
    """Decode ``paths`` into one uint8 tensor ``(N, 3, size, size)``, ``workers`` images at a time."""
    images = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)

    def decode(index: int) -> None:
        images[index] = _decode_mhist_image(paths[index], size)

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for _ in pool.map(decode, range(len(paths))):
            pass
    finally:
        pool.shutdown(cancel_futures=True)  # after a broken image, do not decode the rest
    return images


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``x`` ``(N, C, H, W)`` in [0, 1] units (exact, from histograms)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in x.unbind(1):
        share = torch.bincount(channel.flatten(), minlength=256).double()
        share /= share.sum()
        mean = (share * levels).sum()
        means.append(mean.item())
        stds.append((share * (levels - mean).square()).sum().sqrt().item())
    return tuple(means), tuple(stds)


def load_mhist(
    root: str | os.PathLike[str] | None = None,
    *,
    size: int = MHIST_IMAGE_SIZE,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    limit: int | None = None,
    workers: int | None = None,
) -> MhistData:
    """Load MHIST (3,152 colorectal polyp patches, 224×224 RGB, HP vs SSA) as uint8 tensors ``(N, 3, size, size)``.

    Reads ``root/mhist/annotations.csv`` (the official file; ``root`` may also be the mhist folder
    itself; default: :func:`kdcourse.paths.data_root`) and the images it names from
    ``root/mhist/images/``, each as the CSV's name or the same stem with the other extension (the
    release has .png, a re-encoded copy .jpg). The test split is the official ``test`` partition; a
    validation split stratified by label (``val_fraction`` of it, fixed by ``split_seed``) is carved
    from the official ``train`` partition and the rest is the training split, so model selection
    never sees the test set. All 3,152 images take about 0.47 GB at 224 px.

    Args:
        size: side of the returned images in pixels; images are checked to be 224×224 and then resized.
        limit: keep at most this many images per split (stratified, seeded), for quick smoke runs.
        workers: decoding threads (default: the number of CPUs, at most 8).

    Raises:
        MissingDataError: the CSV, the images folder or a listed image is absent; the message says how
            to obtain MHIST (it cannot be downloaded) and where to put it.
        CorruptDataError: the CSV is unreadable, lacks a column or has a bad row (unknown label or
            partition, votes outside 0–7 or against the majority label), or an image does not decode
            or is not 224×224 RGB; the message names the file.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 pixel, got {size}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    base = data_root(root)
    folder = base if (base / "annotations.csv").is_file() else base / "mhist"
    csv_path = folder / "annotations.csv"
    fix = (
        f"MHIST cannot be downloaded: request it from its authors through the request form on the MHIST web site "
        f"({MHIST_URL}), then put the official annotations.csv at {csv_path} and the images in {folder / 'images'} "
        f"(the folder `root`/mhist; pass root=... or set {DATA_ENV})."
    )
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
    x = _decode_mhist(_mhist_image_paths(csv_path, selected, fix), size, workers or min(8, os.cpu_count() or 1))
    bounds = torch.tensor([0] + [len(idx) for idx in splits]).cumsum(0).tolist()
    train, val_split, test_split = (
        MhistSplit(x[a:b], y[order[a:b]], v[order[a:b]], tuple(selected[a:b])) for a, b in zip(bounds, bounds[1:])
    )
    return MhistData(train, val_split, test_split, *_channel_stats(train.x))


def write_generated_mhist(folder: str | os.PathLike[str], per_partition: int = 48, seed: int = 0) -> Path:
    """Write a small stand-in for MHIST in its real layout and return the ``mhist`` folder.

    ``folder/mhist/annotations.csv`` (the official columns) and ``folder/mhist/images/*.png``
    (224×224 RGB): ``per_partition`` images for each of train and test, 2/3 HP and 1/3 SSA, with
    votes consistent with the labels. The pictures are pink noise with purple blobs, denser for
    SSA, so that a network can learn something; they are **not** histology. Only for smoke runs
    and tests where MHIST itself is absent: anything built on them must say so.
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
    return root


def write_generated_cifar10(folder: str | os.PathLike[str], per_batch: int = 60, seed: int = 0) -> Path:
    """Write a small stand-in for CIFAR-10 in the release's pickle format and return ``folder``.

    ``folder/cifar-10-batches-py/`` gets the five training batches, the test batch and
    ``batches.meta``, each batch with ``per_batch`` images of 32×32, the classes in turn. Every class
    is a noisy square of its own colour on a grey background, so that a network can learn something;
    they are **not** photographs. Only for smoke runs and tests where CIFAR-10 itself is absent:
    anything built on them must say so. :func:`load_cifar10` reads them (with ``download=False``)."""
    import pickle

    if per_batch < len(CIFAR10_CLASSES):
        raise ValueError(f"per_batch must be at least {len(CIFAR10_CLASSES)} (every class in every batch), got {per_batch}")
    target = Path(folder) / CIFAR10_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (len(CIFAR10_CLASSES), 3, 1, 1), generator=generator).float()
    for name in CIFAR10_FILES[:-1]:
        labels = torch.arange(per_batch) % len(CIFAR10_CLASSES)
        pixels = 128 + 30 * torch.randn(per_batch, 3, 32, 32, generator=generator)
        pixels[:, :, 8:24, 8:24] = colours[labels] + 30 * torch.randn(per_batch, 3, 16, 16, generator=generator)
        entry = {"batch_label": name, "labels": labels.tolist(), "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
                 "data": pixels.clamp(0, 255).to(torch.uint8).reshape(per_batch, -1).numpy()}
        with (target / name).open("wb") as handle:
            pickle.dump(entry, handle)
    with (target / "batches.meta").open("wb") as handle:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, handle)
    return Path(folder)


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

    def fingerprint(self) -> str:
        """What these batches hold and how they are drawn: a hash of the tensors, the batch settings,
        the seed and the transform (see :func:`kdcourse.checkpoints.tensor_fingerprint`)."""
        settings = (self.batch_size, self.shuffle, self.seed, self.drop_last)
        return f"{checkpoints.tensor_fingerprint(*self.tensors)}{settings}{checkpoints.describe_callable(self.transform)}"

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


def augment_batch(x: Tensor, generator: torch.Generator) -> Tensor:
    """Map each square image of ``x`` ``(N, C, H, H)`` (any dtype) by its own random flip / 90° rotation.

    Each image gets one of the 8 symmetries of the square (the dihedral group: 4 rotations, each
    with or without a horizontal flip; random horizontal and vertical flips plus a random rotation
    give the same 8, uniformly), drawn from ``generator`` (a CPU generator, also for ``x`` on a GPU).
    For histology: tissue on a slide has no canonical orientation, so all 8 views are equally
    valid, and they only permute pixels, so no interpolation blurs the image and its pixel
    statistics stay exactly the same. Images are grouped by their symmetry, so there is no
    per-image Python loop.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"augment_batch needs square images (N, C, H, H), got shape {tuple(x.shape)}")
    codes = torch.randint(0, 8, (len(x),), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for code in range(8):
        index = (codes == code).nonzero().squeeze(1)
        group = x[index].flip(-1) if code >= 4 else x[index]
        out[index] = group.rot90(code % 4, dims=(-2, -1))
    return out


def normalise_images(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 images ``(N, C, H, W)`` (0–255) as float32 ``(x / 255 − mean) / std``.

    ``mean`` and ``std`` hold one value per channel, in [0, 1] units (e.g. :class:`MhistData`'s).
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or not len(mean) == len(std) == x.shape[1]:
        raise ValueError(f"normalise_images needs uint8 images (N, C, H, W) and C means and stds, got {x.dtype} {tuple(x.shape)}, "
                         f"{len(mean)} means, {len(std)} stds")
    shape = (1, -1, 1, 1)
    mean_tensor = torch.tensor(mean, device=x.device).view(shape)
    std_tensor = torch.tensor(std, device=x.device).view(shape)
    return x.float().div_(255.0).sub_(mean_tensor).div_(std_tensor)


@dataclass(frozen=True)
class ImageTransform:
    """A ``transform`` for :class:`TensorBatches` over uint8 images (e.g. :class:`MhistSplit` ``x``).

    Moves each batch to ``device`` (if given, so that the work below runs there), applies
    :func:`augment_batch` when ``augment`` is true (training) and returns :func:`normalise_images`
    of it: float32 ``(N, C, H, W)``. Use ``augment=False`` for validation and test batches.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True
    device: str | torch.device | None = None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.device is not None:
            x = x.to(self.device, non_blocking=True)
        if self.augment:
            x = augment_batch(x, generator)
        return normalise_images(x, self.mean, self.std)
