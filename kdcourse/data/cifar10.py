"""CIFAR-10 (60,000 photographs of 32×32 in 10 classes): the release's pickled batches or an image-folder copy.

Two on-disk forms load into the same uint8 tensors: the release (``cifar-10-batches-py/``, read
through ``torchvision.datasets.CIFAR10``, which downloads it where the network allows) and a copy as
image files in torchvision's ``ImageFolder`` layout (``train/<class>/*.jpg`` and
``test/<class>/*.jpg``, e.g. a JPEG re-encoding). The result's ``source`` says which was read.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections import Counter
from pathlib import Path

import torch

from kdcourse.data.containers import ImageData, ImageSplit
from kdcourse.data.decode import decode_all, decode_rgb
from kdcourse.data.errors import CorruptDataError, MissingDataError
from kdcourse.data.generated import generated_source, mark_generated
from kdcourse.data.normalise import channel_stats
from kdcourse.data.splits import stratified_split
from kdcourse.paths import DATA_ENV, data_root

__all__ = ["CIFAR10_CLASSES", "CIFAR10_FILES", "CIFAR10_FOLDER", "CIFAR10_COPY_FOLDER", "CIFAR10_SOURCES",
           "load_cifar10", "write_generated_cifar10"]

# the release's label order (label k is CIFAR10_CLASSES[k]); also the class folders of an image-folder copy
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")
CIFAR10_COPY_FOLDER = "cifar10-jpeg"  # where an image-folder copy is looked for under the data root
CIFAR10_SOURCES = {"release": "CIFAR-10", "copy": "CIFAR-10 (JPEG copy)"}
CIFAR10_IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RELEASE_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _check_cifar_batch(path: Path, fix: str) -> None:
    """Raise :class:`CorruptDataError` naming ``path`` unless it is a CIFAR-10 batch (or the meta file) as pickled by the release."""
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


def _read_release(base: Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    """The official training and test splits from ``base/cifar-10-batches-py/`` (downloaded there if allowed)."""
    from torchvision.datasets import CIFAR10

    class _Cifar10(CIFAR10):
        # presence instead of the release's MD5 sums: the batches are checked below, so subsets load too
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    folder = base / CIFAR10_FOLDER
    fix = (f"Download cifar-10-python.tar.gz from {RELEASE_URL} and extract it in {base} "
           f"(so that {folder} holds {', '.join(CIFAR10_FILES)}), or put an image-folder copy (train/<class>/*.jpg, "
           f"test/<class>/*.jpg) in {base / CIFAR10_COPY_FOLDER}, or pass root=... / set ${DATA_ENV}.")
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
    return splits[0], splits[1]


def _list_image_folder(split: Path, fix: str) -> tuple[list[Path], list[int]]:
    """The image files of ``split`` (``<class>/<name>.jpg``; classes in label order, files by name) and their labels.

    Every class needs its folder and the same number of images as the others (CIFAR-10 is balanced);
    a missing or unexpected class folder, a short or long class, or a file that is not an image raises
    :class:`CorruptDataError` naming it.
    """
    folders = sorted(path.name for path in split.iterdir() if path.is_dir() and not path.name.startswith("."))
    missing = [name for name in CIFAR10_CLASSES if name not in folders]
    extra = [name for name in folders if name not in CIFAR10_CLASSES]
    if missing or extra:
        raise CorruptDataError(f"{split} has the class folders {folders}, expected {list(CIFAR10_CLASSES)}"
                               f"{f'; missing: {missing}' if missing else ''}{f'; unexpected: {extra}' if extra else ''}. {fix}")
    files: dict[str, list[Path]] = {}
    for name in CIFAR10_CLASSES:
        entries = sorted(path for path in (split / name).iterdir() if not path.name.startswith("."))
        strange = [path for path in entries if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)]
        if strange:
            raise CorruptDataError(f"{strange[0]} is not an image file ({', '.join(IMAGE_SUFFIXES)}) but lies in the class folder "
                                   f"{split / name}{f' ({len(strange) - 1} more like it)' if len(strange) > 1 else ''}. {fix}")
        files[name] = entries
    counts = {name: len(paths) for name, paths in files.items()}
    usual = Counter(counts.values()).most_common(1)[0][0]
    odd = {name: count for name, count in counts.items() if count != usual or count == 0}
    if odd:
        raise CorruptDataError(f"the classes of {split} must hold the same number of images (CIFAR-10 is balanced): most hold "
                               f"{usual}, but {', '.join(f'{split / name} holds {count}' for name, count in odd.items())}. {fix}")
    paths = [path for name in CIFAR10_CLASSES for path in files[name]]
    return paths, [label for label, name in enumerate(CIFAR10_CLASSES) for _ in files[name]]


def _read_image_folders(folder: Path, workers: int | None) -> tuple[ImageSplit, ImageSplit]:
    """The official training and test splits from an image-folder copy in ``folder`` (``train/`` and ``test/``)."""
    fix = (f"Restore the copy so that {folder} holds train/<class>/ and test/<class>/ with the {CIFAR10_IMAGE_SIZE}×"
           f"{CIFAR10_IMAGE_SIZE} RGB images of each of the classes {', '.join(CIFAR10_CLASSES)}, or use the release "
           f"(cifar-10-python.tar.gz from {RELEASE_URL}, extracted in the data root).")
    decode = functools.partial(decode_rgb, size=CIFAR10_IMAGE_SIZE, what="the CIFAR-10 image", fix=fix)
    splits = []
    for name in ("train", "test"):
        if not (folder / name).is_dir():
            raise CorruptDataError(f"the CIFAR-10 copy in {folder} has no {name}/ folder. {fix}")
        paths, labels = _list_image_folder(folder / name, fix)
        x = decode_all(paths, decode, (3, CIFAR10_IMAGE_SIZE, CIFAR10_IMAGE_SIZE), workers)
        splits.append(ImageSplit(x, torch.tensor(labels, dtype=torch.long)))
    return splits[0], splits[1]


def _copy_folder(base: Path) -> Path | None:
    """The image-folder copy under ``base``: ``base`` itself or ``base/cifar10-jpeg`` when it has ``train/`` or ``test/``."""
    return next((folder for folder in (base, base / CIFAR10_COPY_FOLDER)
                 if (folder / "train").is_dir() or (folder / "test").is_dir()), None)


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
    workers: int | None = None,
) -> ImageData:
    """Load CIFAR-10 (60,000 RGB images of 32×32 in 10 classes) as uint8 tensors ``(N, 3, 32, 32)``.

    ``root`` (default: :func:`kdcourse.paths.data_root`) is searched in this order:

    1. the release's pickled batches in ``root/cifar-10-batches-py/`` (``source`` "CIFAR-10");
    2. an image-folder copy (``source`` "CIFAR-10 (JPEG copy)"): ``train/<class>/*.jpg`` and
       ``test/<class>/*.jpg`` in ``root`` or ``root/cifar10-jpeg/``, the class folders named as
       :data:`CIFAR10_CLASSES` (which gives the labels), decoded once by ``workers`` threads;
    3. else the release, downloaded into ``root`` where ``download`` and the network allow.

    Splits holding fewer images than the release's load too (tests write such files). A validation
    split of ``val_size`` images, stratified by class and fixed by ``split_seed``, is carved from the
    training images: model selection and early stopping never see the test split. ``mean``/``std``
    are the training split's channel statistics; a generated stand-in
    (:func:`write_generated_cifar10`) says so in ``source``.

    Raises:
        MissingDataError: neither form is there and the release could not be downloaded; says where to put it.
        CorruptDataError: a batch cannot be unpickled or is not in the release's format; a class folder of
            the copy is missing or unexpected, a class holds fewer or more images than the others, or an
            image does not decode or is not 32×32 RGB (each named).
    """
    base = data_root(root)
    copy = _copy_folder(base)
    if (base / CIFAR10_FOLDER).is_dir() or copy is None:
        (official_train, test), folder, source = _read_release(base, download), base / CIFAR10_FOLDER, CIFAR10_SOURCES["release"]
    else:
        (official_train, test), folder, source = _read_image_folders(copy, workers), copy, CIFAR10_SOURCES["copy"]
    if not 0 < val_size < len(official_train):
        raise ValueError(f"val_size must leave training and validation images of the {len(official_train)}, got {val_size}")
    rest, held_out = stratified_split(official_train.y, val_size, split_seed)
    train = official_train.subset(rest)
    return ImageData(train, official_train.subset(held_out), test, CIFAR10_CLASSES, *channel_stats(train.x),
                     generated_source(folder, "CIFAR-10") or source)


def write_generated_cifar10(folder: str | os.PathLike[str], per_batch: int = 60, seed: int = 0) -> Path:
    """Write a small stand-in for CIFAR-10 in the release's pickle format and return ``folder``.

    ``folder/cifar-10-batches-py/`` gets the five training batches, the test batch and
    ``batches.meta``, each batch with ``per_batch`` images of 32×32, the classes in turn. Every class
    is a noisy square of its own colour on a grey background, so that a network can learn something;
    they are **not** photographs. Only for smoke runs and tests where CIFAR-10 itself is absent:
    :func:`load_cifar10` reads them (with ``download=False``) and says in ``source`` that they are generated."""
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
    mark_generated(target, "CIFAR-10")
    return Path(folder)
