"""Cached dihedral views of images through a frozen trunk, and mini-batches drawn from them.

Histology augmentation here is the eight symmetries of the square (:func:`kdcourse.data.augment_batch`),
so a frozen trunk only ever sees eight versions of each training image: :func:`trunk_views` computes
the trunk's output for all of them once, and :class:`ViewBatches` then serves each image in a random
one of its views, drawn exactly as ``TensorBatches`` with an augmenting ``ImageTransform`` would draw it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from kdcourse import checkpoints
from kdcourse.data import normalise_images

__all__ = ["VIEWS", "ALL_VIEWS", "dihedral_view", "trunk_views", "apply_in_batches", "ViewBatches"]

VIEWS = 8  # the symmetries of the square: 4 rotations, each with or without a horizontal flip
ALL_VIEWS = tuple(range(VIEWS))  # every view code: for images without a preferred orientation (histology)


def dihedral_view(x: Tensor, code: int) -> Tensor:
    """View ``code`` (0–7) of square images ``x`` ``(N, C, H, H)``, as :func:`kdcourse.data.augment_batch` draws it:
    codes 4–7 flip horizontally first, then every code rotates by ``code % 4`` quarter turns."""
    if not 0 <= code < VIEWS:
        raise ValueError(f"a dihedral view code lies in 0–7, got {code}")
    return (x.flip(-1) if code >= 4 else x).rot90(code % 4, dims=(-2, -1))


@torch.no_grad()
def apply_in_batches(
    module: Callable[[Tensor], Tensor],
    inputs: Tensor,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``module(prepare(inputs[i:i+b]))`` over ``inputs`` ``(N, ...)`` in batches, concatenated as float32 on the CPU.

    ``prepare`` maps a batch (already on ``device``) before the module, e.g. normalisation of uint8 images."""
    device = torch.device(device)
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size].to(device)
        if prepare is not None:
            batch = prepare(batch)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs.append(module(batch).float().cpu())
    return torch.cat(outputs)


@torch.no_grad()
def trunk_views(
    trunk: nn.Module,
    images: Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    views: int | tuple[int, ...] = VIEWS,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """Outputs ``(V, N, C', h, w)`` (float32, CPU) of ``trunk`` in eval mode on dihedral views of uint8
    ``images`` ``(N, 3, H, H)``, normalised with ``mean``/``std``.

    ``views`` is a count (the first ``views`` codes; ``1`` gives the images as they are, for validation
    and test sets) or a tuple of view codes, e.g. ``(0, 4)`` for an image and its mirror image."""
    codes = tuple(range(views)) if isinstance(views, int) else tuple(views)
    if not codes or len(set(codes)) != len(codes) or not all(0 <= code < VIEWS for code in codes):
        raise ValueError(f"views must be a count in 1–{VIEWS} or distinct codes in 0–{VIEWS - 1}, got {views}")
    was_training = trunk.training
    trunk.eval()

    def prepare(batch: Tensor) -> Tensor:
        return normalise_images(batch, mean, std).contiguous(memory_format=memory_format)

    out = torch.stack([
        apply_in_batches(trunk, dihedral_view(images, code), batch_size=batch_size, device=device, amp_dtype=amp_dtype,
                         prepare=prepare)
        for code in codes
    ])
    trunk.train(was_training)
    return out


class ViewBatches:
    """Shuffled mini-batches over cached views: yields ``(features[v, idx], targets[idx], *extras)``.

    ``features`` is ``(V, N, ...)`` (see :func:`trunk_views`); each sample of a batch comes in its own
    random view ``v`` (0 … V−1, any V ≥ 1), and every tensor of ``extras`` is indexed the same way when it has
    the leading view dimension ``(V, N, ...)`` (e.g. teacher logits of each view), else as ``[idx]``.
    The shuffling and the views are drawn from a generator seeded by ``(seed, epoch)`` in the order
    :class:`kdcourse.data.TensorBatches` with an augmenting :class:`kdcourse.data.ImageTransform`
    draws them when V is all 8 dihedral views, so both give the same batches. With ``shuffle=False``
    every sample comes in view 0.
    """

    def __init__(
        self, features: Tensor, targets: Tensor, *extras: Tensor, batch_size: int = 64, seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if features.dim() < 2 or len(targets) != features.shape[1]:
            raise ValueError(f"features must be (V, N, ...) with N = len(targets) = {len(targets)}, "
                             f"got {tuple(features.shape)}")
        for extra in extras:
            if extra.shape[:2] != features.shape[:2] and len(extra) != len(targets):
                raise ValueError(f"an extra tensor of shape {tuple(extra.shape)} matches neither (V, N) "
                                 f"nor (N,) = {len(targets)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.features, self.targets, self.extras = features, targets, extras
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling and views of epoch ``epoch`` (``fit`` calls it)."""
        self.epoch = epoch

    def fingerprint(self) -> str:
        """What these batches hold and how they are drawn (see :meth:`kdcourse.data.TensorBatches.fingerprint`)."""
        tensors = checkpoints.tensor_fingerprint(self.features, self.targets, *self.extras)
        return f"{tensors}{(self.batch_size, self.shuffle, self.seed)}"

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def _pick(self, tensor: Tensor, views: Tensor, idx: Tensor) -> Tensor:
        if tensor.dim() >= 2 and tensor.shape[:2] == self.features.shape[:2]:
            return tensor[views, idx]
        return tensor[idx]

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        n = len(self.targets)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.shuffle:
                views = torch.randint(0, len(self.features), (len(idx),), generator=generator)
            else:
                views = torch.zeros(len(idx), dtype=torch.long)
            yield (self.features[views, idx], self.targets[idx], *(self._pick(e, views, idx) for e in self.extras))
