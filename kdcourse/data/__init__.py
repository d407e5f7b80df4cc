"""Data sets as in-memory tensors, validation splits and fast batch iteration.

One module per data set (:mod:`~kdcourse.data.mnist`, :mod:`~kdcourse.data.eurosat`,
:mod:`~kdcourse.data.cifar10`, :mod:`~kdcourse.data.mhist`), each loader returning the one container
type :class:`ImageData` (train / validation / test :class:`ImageSplit`, the classes, the
normalisation and the source read). MNIST and EuroSAT are kept as normalised float tensors;
CIFAR-10 and MHIST are decoded once into uint8 tensors that :class:`ImageTransform` augments and
normalises batch by batch, on the training device. Loaders take an explicit ``root``, else
``$KDCOURSE_DATA``, else a user cache folder (:func:`kdcourse.paths.data_root`), and raise
:class:`MissingDataError` or :class:`CorruptDataError` naming the file and the fix.
"""

from kdcourse.data import cifar10, eurosat, mhist, mnist
from kdcourse.data.augment import augment_batch, random_shift
from kdcourse.data.batches import ImageTransform, ShiftTransform, TensorBatches
from kdcourse.data.cifar10 import CIFAR10_CLASSES, CIFAR10_FILES, CIFAR10_SOURCES, load_cifar10, write_generated_cifar10
from kdcourse.data.containers import ImageData, ImageSplit
from kdcourse.data.errors import CorruptDataError, MissingDataError
from kdcourse.data.eurosat import EUROSAT_CLASSES, load_eurosat
from kdcourse.data.mhist import MHIST_CLASSES, MHIST_COLUMNS, MHIST_IMAGE_SIZE, MHIST_URL, load_mhist, write_generated_mhist
from kdcourse.data.mnist import MNIST_CLASSES, MNIST_FILES, MNIST_MEAN, MNIST_STD, load_mnist
from kdcourse.data.normalise import channel_stats, normalise_images
from kdcourse.data.splits import stratified_split, train_val_split

__all__ = [
    "cifar10", "eurosat", "mhist", "mnist",
    "MissingDataError", "CorruptDataError",
    "ImageSplit", "ImageData",
    "MNIST_MEAN", "MNIST_STD", "MNIST_CLASSES", "MNIST_FILES", "load_mnist",
    "EUROSAT_CLASSES", "load_eurosat",
    "CIFAR10_CLASSES", "CIFAR10_FILES", "CIFAR10_SOURCES", "load_cifar10", "write_generated_cifar10",
    "MHIST_CLASSES", "MHIST_COLUMNS", "MHIST_IMAGE_SIZE", "MHIST_URL", "load_mhist", "write_generated_mhist",
    "train_val_split", "stratified_split",
    "TensorBatches", "ImageTransform", "ShiftTransform", "random_shift", "augment_batch",
    "normalise_images", "channel_stats",
]
