"""The cached inputs of one pretrained network: its trunk's maps of every training view, of the
validation and test images, and the pooled features of its pretrained top, computed once and
stored in a file that is reused only for the same weights and images."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from kdcourse import checkpoints, hardware
from kdcourse.backbones import Backbone, split_at, splittable
from kdcourse.data import ImageData, normalise_images
from kdcourse.transfer.views import ALL_VIEWS, apply_in_batches, dihedral_view, trunk_views

__all__ = ["Views", "role_views", "compute_views"]


@dataclass
class Views:
    """Cached inputs of one role: trunk maps of the V training views and of validation and test, and
    the pooled features of the pretrained top for the head phase (float32, CPU)."""

    train: Tensor | None  # (V, N, C', h, w); None for a network without a trunk (pooled features only)
    val: Tensor | None  # (N_val, C', h, w)
    test: Tensor | None  # (N_test, C', h, w)
    pooled_train: Tensor  # (V, N, D)
    pooled_val: Tensor  # (N_val, D)
    pooled_test: Tensor  # (N_test, D)
    seconds: float = float("nan")  # of the computation, whenever it ran (NaN for a cache written before they were kept)


def role_views(role: str, net: Backbone, dataset: ImageData, split_reduction: int, cache_dir: Path,
               device: torch.device, amp_dtype: torch.dtype | None = None,
               views: tuple[int, ...] = ALL_VIEWS) -> Views:
    """The views of ``net`` cut at ``split_reduction`` (see :func:`compute_views`), read from
    ``cache_dir`` when that file was computed from the same weights, images and view codes ``views``,
    else computed and stored there. ``role`` names the file (teacher, student, ...)."""
    key = {"weights": checkpoints.module_fingerprint(net.model),
           "images": checkpoints.tensor_fingerprint(dataset.train.x, dataset.val.x, dataset.test.x),
           "model": net.name, "reduction": str(split_reduction), "views": str(list(views))}
    name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    value, seconds = checkpoints.cached(Path(cache_dir) / f"{role}_{name}.pt", key, lambda: asdict(
        compute_views(net, dataset, split_reduction, device, amp_dtype, views)), with_seconds=True)
    return Views(**(value | {"seconds": seconds}))


def compute_views(net: Backbone, dataset: ImageData, split_reduction: int, device: torch.device,
                  amp_dtype: torch.dtype | None = None, views: tuple[int, ...] = ALL_VIEWS) -> Views:
    """The trunk outputs of the training views ``views`` (dihedral codes) and of validation and test
    (as they are), and their pooled features through the pretrained top.

    A network that :func:`kdcourse.backbones.split_at` cannot cut (a ViT) gets its pooled features only
    (its trunk fields are None): it can be trained as a head on them, or fine-tuned whole."""
    if not splittable(net.model):
        return _pooled_views(net, dataset, device, amp_dtype, views)
    trunk, top = split_at(net.model, split_reduction)
    trunk.to(device)
    top.to(device).eval()
    kwargs = {"device": device, "amp_dtype": amp_dtype, "memory_format": hardware.CONV_MEMORY_FORMAT}
    train = trunk_views(trunk, dataset.train.x, net.mean, net.std, views=views, **kwargs)
    val = trunk_views(trunk, dataset.val.x, net.mean, net.std, views=1, **kwargs)[0]
    test = trunk_views(trunk, dataset.test.x, net.mean, net.std, views=1, **kwargs)[0]

    def pooled(maps: Tensor) -> Tensor:
        return apply_in_batches(lambda z: top(z, pre_logits=True), maps, batch_size=256, device=device,
                                amp_dtype=amp_dtype)

    return Views(train, val, test, torch.stack([pooled(v) for v in train]), pooled(val), pooled(test))


def _pooled_views(net: Backbone, dataset: ImageData, device: torch.device, amp_dtype: torch.dtype | None,
                  views: tuple[int, ...]) -> Views:
    """Pooled features only, through the whole network, for a network without a trunk."""
    model = net.model.to(device).eval()

    def pooled(images: Tensor, code: int = 0) -> Tensor:
        return apply_in_batches(lambda x: model.forward_head(model.forward_features(x), pre_logits=True),
                                dihedral_view(images, code), batch_size=64, device=device, amp_dtype=amp_dtype,
                                prepare=lambda b: normalise_images(b, net.mean, net.std))

    return Views(None, None, None, torch.stack([pooled(dataset.train.x, code) for code in views]),
                 pooled(dataset.val.x), pooled(dataset.test.x))
