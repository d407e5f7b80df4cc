"""EuroSAT RGB (Sentinel-2 land cover, 64×64), through ``torchvision.datasets.EuroSAT``."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from kdcourse.data.containers import ImageData, ImageSplit
from kdcourse.data.decode import decode_all, decode_rgb
from kdcourse.data.errors import CorruptDataError, MissingDataError
from kdcourse.paths import DATA_ENV, data_root

__all__ = ["EUROSAT_CLASSES", "EUROSAT_IMAGE_SIZE", "load_eurosat"]

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
    workers: int | None = None,
) -> ImageData:
    """Load EuroSAT RGB (27,000 Sentinel-2 patches, 64×64, 10 classes) as normalised tensors ``(N, 3, 64, 64)``.

    The images are listed by ``torchvision.datasets.EuroSAT`` in ``root/eurosat/2750/<class>/*.jpg``
    (``root`` defaults to :func:`kdcourse.paths.data_root`) and decoded by ``workers`` threads.
    EuroSAT has no official split: a random permutation fixed by ``split_seed`` gives ``test_size``
    test and ``val_size`` validation images; the rest is the training split. Each channel is
    standardised with the mean and std of the training split (``mean``/``std`` of the result).

    Raises:
        MissingDataError: the folder is absent and could not be downloaded; the message says where to put it.
        CorruptDataError: a class folder is missing or unexpected, an image cannot be decoded (named), or
            an image is not 64×64 RGB.
    """
    from torchvision.datasets import EuroSAT

    folder = data_root(root)
    fix = (f"To fix: download EuroSAT.zip (RGB) and unpack it so that {folder / 'eurosat' / '2750'} holds one folder per class "
           f"({', '.join(EUROSAT_CLASSES)}), or set root=... / ${DATA_ENV}.")
    try:
        dataset = EuroSAT(str(folder), download=download, loader=lambda p: p)
    except Exception as error:  # torchvision raises RuntimeError (not found) or URLError (offline)
        raise MissingDataError(f"EuroSAT is not in {folder / 'eurosat' / '2750'} and could not be downloaded "
                               f"({type(error).__name__}: {error}). {fix}") from error
    if tuple(dataset.classes) != EUROSAT_CLASSES:
        raise CorruptDataError(f"{dataset.root}/eurosat/2750 has the class folders {dataset.classes}, expected {list(EUROSAT_CLASSES)}. {fix}")
    n = len(dataset)
    if val_size < 1 or test_size < 1 or val_size + test_size >= n:
        raise ValueError(f"val_size ({val_size}) and test_size ({test_size}) must be >= 1 and leave training images of the {n}")
    decode = functools.partial(decode_rgb, size=EUROSAT_IMAGE_SIZE, what="the EuroSAT image", fix=f"Re-extract the archive. {fix}")
    images = decode_all([Path(path) for path, _ in dataset.samples], decode, (3, EUROSAT_IMAGE_SIZE, EUROSAT_IMAGE_SIZE), workers)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    test, val, train = order[:test_size], order[test_size : test_size + val_size], order[test_size + val_size :]
    x = images.float().div_(255.0)
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True)
    full = ImageSplit(x.sub_(mean).div_(std), torch.tensor(dataset.targets, dtype=torch.long))
    return ImageData(full.subset(train.sort().values), full.subset(val.sort().values), full.subset(test.sort().values),
                     EUROSAT_CLASSES, tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()), "EuroSAT (RGB)")
