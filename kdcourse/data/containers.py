"""The one container of every data set: :class:`ImageData`, three :class:`ImageSplit` with their classes,
normalisation and source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["ImageSplit", "ImageData"]


@dataclass(frozen=True)
class ImageSplit:
    """Images ``x`` ``(N, C, H, W)`` with labels ``y`` ``(N,)`` int64, and what a data set knows of each image.

    ``x`` is float32 and already normalised (MNIST, EuroSAT) or uint8 0–255, to be normalised batch
    by batch (CIFAR-10, MHIST; see :class:`kdcourse.data.ImageTransform`). ``names`` is each image's
    identity where the data set has one (MHIST: the CSV's image name), else None. ``extras`` holds
    further per-image tensors ``(N, ...)`` by name (MHIST: ``"votes"``, the pathologists' SSA votes).
    """

    x: Tensor
    y: Tensor
    names: tuple[str, ...] | None = None
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.y)
        lengths = {"x": len(self.x), "names": n if self.names is None else len(self.names)}
        lengths |= {f"extras[{key!r}]": len(value) for key, value in self.extras.items()}
        wrong = {key: length for key, length in lengths.items() if length != n}
        if wrong:
            raise ValueError(f"an ImageSplit of {n} labels needs {n} of everything, got {wrong}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> "ImageSplit":
        """The samples at ``index`` (a 1-D index tensor), with their names and extras."""
        names = None if self.names is None else tuple(self.names[i] for i in index.tolist())
        return ImageSplit(self.x[index], self.y[index], names, {key: value[index] for key, value in self.extras.items()})

    def head(self, n: int | None) -> "ImageSplit":
        """The first ``n`` samples (all of them when ``n`` is None)."""
        if n is None:
            return self
        names = None if self.names is None else self.names[:n]
        return ImageSplit(self.x[:n], self.y[:n], names, {key: value[:n] for key, value in self.extras.items()})


@dataclass(frozen=True)
class ImageData:
    """A data set split into train / validation / test; validation is carved from the official training set.

    ``classes`` names label ``k`` at index ``k``. ``mean`` and ``std`` hold one value per channel in
    [0, 1] units: the normalisation already applied to float images, or the one to apply to uint8
    images (the training split's statistics; :class:`kdcourse.data.ImageTransform`). ``source`` says
    what was read, for records and chapters: e.g. ``"CIFAR-10"`` (the release) or
    ``"CIFAR-10 (JPEG copy)"``; a generated stand-in says so. Change a field with
    ``dataclasses.replace`` (e.g. a shorter training split).
    """

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
