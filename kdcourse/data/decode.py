"""Decode image files once into one uint8 tensor, several files at a time."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from kdcourse.data.errors import CorruptDataError

__all__ = ["default_workers", "decode_all", "decode_rgb"]


def default_workers() -> int:
    """Decoding threads by default: the number of CPUs, at most 8."""
    return min(8, os.cpu_count() or 1)


def decode_all(paths: list[Path], decode: Callable[[Path], Tensor], shape: tuple[int, ...], workers: int | None = None) -> Tensor:
    """``decode(path)`` of every path, each of ``shape`` ``(C, H, W)``, as one uint8 tensor ``(N, C, H, W)``.

    ``workers`` threads (default: :func:`default_workers`) decode at a time; the first error stops
    the rest and is raised as it is.
    """
    images = torch.empty(len(paths), *shape, dtype=torch.uint8)

    def fill(index: int) -> None:
        images[index] = decode(paths[index])

    pool = ThreadPoolExecutor(max_workers=workers or default_workers())
    try:
        for _ in pool.map(fill, range(len(paths))):
            pass
    finally:
        pool.shutdown(cancel_futures=True)  # after a broken image, do not decode the rest
    return images


def decode_rgb(path: Path, size: int, what: str, fix: str) -> Tensor:
    """The image file at ``path`` (JPEG, PNG, ...) as uint8 ``(3, size, size)``; it must be ``size``×``size`` RGB.

    Raises :class:`CorruptDataError` naming ``path`` (as ``what``, e.g. "the CIFAR-10 image") and
    ending with ``fix`` when the file does not decode or has another size or mode.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:  # one read, then decoding in memory
            image.load()
            mode, (width, height) = image.mode, image.size
            pixels = bytearray(image.tobytes()) if (mode, width, height) == ("RGB", size, size) else None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow reports broken files with any of these
        raise CorruptDataError(f"cannot decode {what} {path} ({type(error).__name__}: {error}). {fix}") from error
    if pixels is None:
        raise CorruptDataError(f"{what} {path} is {width}×{height} {mode}, expected {size}×{size} RGB. {fix}")
    return torch.frombuffer(pixels, dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
