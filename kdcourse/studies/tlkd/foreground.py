"""Where the TL+KD networks look: the share of positive SHAP mass on the foreground, on MNIST (the
stroke pixels, known exactly) and on photographs (a GrabCut mask), and its paired differences."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from kdcourse import checkpoints
from kdcourse import data as kd_data
from kdcourse.explain import foreground_shares, grabcut_foreground, shap_maps
from kdcourse.stats import Effect, bootstrap_effect, joint_verdict, paired_effect
from kdcourse.studies.tlkd.config import PAIRS, load_backbones, resize_images, teacher_roles
from kdcourse.studies.tlkd.runner import OneView, TlkdOutcome

__all__ = ["ForegroundOutcome", "mnist_foreground", "image_foreground", "FOREGROUND_COMPARISONS", "foreground_effects",
           "found_object", "shap_record", "student_foreground", "explained_students", "OBJECT_SIDE", "ObjectImages",
           "object_images", "PhotoForeground", "found_sentence", "photo_foreground"]


@dataclass
class ForegroundOutcome:
    """Foreground share of positive SHAP mass on MNIST test images.

    ``shares``: one row per (seed, model, image) with ``share`` (the positive SHAP mass of the predicted
    class on stroke pixels, over all its positive mass) and ``stroke`` (the stroke pixels' share of the
    image: what a map spread evenly over the pixels would score). ``images``: the test indices explained."""

    shares: pd.DataFrame
    images: list[int]
    seconds: float


def _rows(seed: int, name: str, model: nn.Module, x: Tensor, reference: Tensor, masks: np.ndarray,
          indices: list[int], area: np.ndarray, samples: int) -> list[dict]:
    """One row per image: its index, the share of ``model``'s SHAP map on its mask, and the mask's area."""
    shares = foreground_shares(model, x, reference, masks, samples=samples, seed=seed)
    return [{"seed": seed, "model": name, "image": int(i), "share": float(s), "stroke": float(a)}
            for i, s, a in zip(indices, shares, area, strict=True)]


def mnist_foreground(models: Mapping[int, Mapping[str, nn.Module]], dataset: kd_data.ImageData, *, images: int = 200,
                     background: int = 100, samples: int = 200) -> ForegroundOutcome:
    """SHAP maps of the networks in ``models`` (per seed, by name: e.g. the MNIST distillation chapter's
    teacher, KD student and scratch student) on the same ``images`` random test images of ``dataset``,
    against ``background`` random training images; stroke pixels (any ink) are the foreground."""
    if images < 1 or background < 1 or samples < 1:
        raise ValueError(f"images, background and samples must be >= 1, got {images}, {background}, {samples}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(dataset.test), generator=generator)[:images]
    rest = torch.randperm(len(dataset.train), generator=generator)[:background]
    x = dataset.test.x[chosen]
    reference = dataset.train.x[rest]
    strokes = (x * kd_data.MNIST_STD + kd_data.MNIST_MEAN > 0.5 / 255)[:, 0].numpy()  # any ink, (N, 28, 28)
    stroke_share = strokes.reshape(len(x), -1).mean(1)
    rows = [row for seed, by_name in models.items() for name, model in by_name.items()
            for row in _rows(seed, name, model, x, reference, strokes, chosen.tolist(), stroke_share, samples)]
    return ForegroundOutcome(pd.DataFrame(rows), chosen.tolist(), time.perf_counter() - start)


def found_object(masks: np.ndarray) -> np.ndarray:
    """Per mask of ``masks`` ``(N, H, W)``, whether it found an object: neither empty nor the whole image
    (an empty or full mask says nothing about where a map points)."""
    area = masks.reshape(len(masks), -1).mean(1)
    return (area > 0) & (area < 1)


def image_foreground(models: Mapping[str, Mapping[int, nn.Module]], images: Tensor, masks: np.ndarray,
                     background: Tensor, mean: tuple[float, ...], std: tuple[float, ...], *, samples: int = 200,
                     ) -> pd.DataFrame:
    """Foreground share of positive SHAP mass for photographs whose foreground ``masks`` ``(N, H, W)`` come
    from an automatic method (:func:`kdcourse.explain.grabcut_foreground`).

    ``models`` maps a name (e.g. an arm) to its network per seed (normalised images → logits); ``images`` and
    ``background`` are uint8 ``(N, 3, H, W)``. One row per (seed, model, image): ``share`` and ``stroke``
    (here the mask's share of the image, the score of an evenly spread map), as :func:`mnist_foreground`.
    Images whose mask is empty or covers everything (GrabCut found no object) say nothing about where a
    map points and are left out; ``image`` keeps their index in ``images``."""
    area = masks.reshape(len(masks), -1).mean(1)
    kept = np.flatnonzero(found_object(masks))
    if len(kept) == 0:
        raise ValueError("every mask is empty or full: no image has a foreground to score")
    x = kd_data.normalise_images(images[torch.from_numpy(kept)], mean, std)
    reference = kd_data.normalise_images(background, mean, std)
    rows = [row for name, by_seed in models.items() for seed, model in by_seed.items()
            for row in _rows(int(seed), name, model, x, reference, masks[kept], kept.tolist(), area[kept], samples)]
    return pd.DataFrame(rows)


def explained_students(outcome: TlkdOutcome) -> dict[str, dict[int, nn.Module]]:
    """The students whose foreground shares are measured, by arm and seed: TL and TL+KD (thesis setting) of
    the fine-tuning regime when it ran, else of the thesis regime."""
    regime = "finetune" if "finetune" in outcome.config.regimes else "thesis"
    return {arm: outcome.models[regime][arm] for arm in ("tl", "tlkd_thesis")}


def student_foreground(outcome: TlkdOutcome, dataset: kd_data.ImageData, images: Tensor, masks: np.ndarray, *,
                       samples: int = 200, teacher: bool = False) -> pd.DataFrame:
    """:func:`image_foreground` of the TL and TL+KD (thesis) students of ``outcome`` (fine-tuned when that
    regime ran, else the thesis regime's), and with ``teacher`` of each seed's teacher (model ``"teacher"``),
    on uint8 test ``images`` with ``masks`` ``(N, H, W)``, against the first 100 training images of ``dataset``.

    ``dataset``, ``images`` and ``masks`` are as :func:`load_data` gives them. Each network sees them at its
    own input size: the pretrained networks at the study's size (the masks resized with the images, by
    nearest neighbour), a teacher trained from scratch as they are. The rows of one image share its index."""
    config = outcome.config
    students = explained_students(outcome)
    nets = load_backbones(config)
    size = config.size
    scaled_masks = torch.nn.functional.interpolate(torch.from_numpy(masks)[:, None].float(), size=(size, size),
                                                   mode="nearest")[:, 0].numpy() > 0.5
    scaled = (resize_images(images, size), scaled_masks, resize_images(dataset.train.x[:100], size))
    rows = [image_foreground(students, *scaled, nets["student"].mean, nets["student"].std, samples=samples)]
    if teacher:
        roles = teacher_roles(PAIRS[config.pair])
        # a teacher with test-time views is explained on the one view it is given, as the students are
        teachers = {"teacher": {seed: model.float() if roles else OneView(model.float())
                                for seed, model in outcome.teacher_models.items()}}
        if roles:  # pretrained: the study's size and the first network's normalisation (an ensemble's members share it)
            first = nets[next(iter(roles))]
            rows.append(image_foreground(teachers, *scaled, first.mean, first.std, samples=samples))
        else:
            rows.append(image_foreground(teachers, images, masks, dataset.train.x[:100], dataset.mean, dataset.std,
                                         samples=samples))
    return pd.concat(rows, ignore_index=True)


@dataclass
class ObjectImages:
    """Test images on which GrabCut found an object: their ``indices`` in the test split (class by class in
    turn, so that any first few span the classes), their ``masks`` ``(N, H, W)`` at the images' own size,
    how many images were ``tried`` to find them, and on how many of those the cut run at the images' own
    size (no upsampling) finds an object (``native_found``), with the working ``side``."""

    indices: np.ndarray
    masks: np.ndarray
    tried: int
    native_found: int
    side: int


OBJECT_SIDE = 256  # the side (px) GrabCut cuts CIFAR-10's photographs at (see grabcut_foreground)


def object_images(images: Tensor, labels: Tensor, count: int, classes: int, *, seed: int = 0,
                  side: int = OBJECT_SIDE) -> ObjectImages:
    """``count`` images of uint8 ``images`` ``(N, 3, H, W)`` on which :func:`grabcut_foreground` (at ``side``
    pixels) finds an object, the same number from each of the ``classes`` labels (the first ``count %
    classes`` classes one more). Each class's images are tried in a random order drawn from ``seed`` until
    its share has an object; a mask that is empty or covers the whole image says nothing about where a
    map points and is passed over."""
    if count < 1 or classes < 1:
        raise ValueError(f"count and classes must be >= 1, got {count} and {classes}")
    generator = torch.Generator().manual_seed(seed)
    found: list[list[tuple[int, np.ndarray]]] = []
    tried = native = 0
    for label in range(classes):
        quota = count // classes + (label < count % classes)
        members = torch.nonzero(labels == label).flatten()
        kept: list[tuple[int, np.ndarray]] = []
        for index in members[torch.randperm(len(members), generator=generator)].tolist():
            if len(kept) == quota:
                break
            mask = grabcut_foreground(images[index], side=side)
            tried += 1
            native += found_object(grabcut_foreground(images[index], side=None)[None])[0]
            if found_object(mask[None])[0]:
                kept.append((index, mask))
        if len(kept) < quota:
            raise ValueError(f"GrabCut found an object in only {len(kept)} of the {len(members)} test images of class "
                             f"{label}, fewer than the {quota} asked for: ask for fewer images (count={count})")
        found.append(kept)
    in_turn = [entry for turn in itertools.zip_longest(*found) for entry in turn if entry is not None]
    return ObjectImages(np.array([index for index, _ in in_turn]), np.stack([mask for _, mask in in_turn]), tried,
                        int(native), side)


@dataclass
class PhotoForeground:
    """Hypothesis 2 on photographs: the test images explained (uint8 ``images``, as loaded, and their
    ``labels``), where GrabCut found their objects (``objects``: test indices and masks), the sentence that
    says how many images that took (``found``), the foreground ``shares`` (:func:`student_foreground`, with
    the teacher; ``image`` is the test index) and the ``seconds`` of the masks and maps."""

    images: Tensor
    labels: Tensor
    objects: ObjectImages
    found: str
    shares: pd.DataFrame
    seconds: float


def found_sentence(objects: ObjectImages, classes: int, size: int) -> str:
    """How many test images GrabCut was given to find ``objects``, and what the cut finds at the images'
    own ``size``."""
    count = len(objects.indices)
    per_class = (f"one from each of {count} classes" if count < classes else f"{count // classes} per class"
                 if count % classes == 0 else f"{count // classes} or {count // classes + 1} per class")
    return (f"GrabCut, run on the photographs upsampled to {objects.side} px, found an object in {count} of the "
            f"{objects.tried} test images it was given (drawn at random, {per_class}); "
            f"run on the same images at their own {size} px it finds one in {objects.native_found}")


def photo_foreground(outcome: TlkdOutcome, dataset: kd_data.ImageData, count: int, samples: int) -> PhotoForeground:
    """The foreground shares of the students and the teacher of ``outcome`` on ``count`` test images of
    ``dataset`` with an object (:func:`object_images`, the same number per class), ``samples`` SHAP
    samples per map. Kept in the run's folder, keyed by the networks, the images and the sizes: a resumed
    or re-rendered run reads them back, with the seconds they first took."""
    classes = len(dataset.classes)
    networks = {f"{arm} seed {seed}": model for arm, by_seed in explained_students(outcome).items()
                for seed, model in by_seed.items()} | {f"teacher seed {seed}": model
                                                       for seed, model in outcome.teacher_models.items()}
    key = {"count": str(count), "samples": str(samples), "side": str(OBJECT_SIDE),
           "test images": checkpoints.tensor_fingerprint(dataset.test.x, dataset.test.y)}
    key |= {name: checkpoints.module_fingerprint(model) for name, model in networks.items()}

    def compute() -> dict:
        objects = object_images(dataset.test.x, dataset.test.y, count, classes, side=OBJECT_SIDE)
        shares = student_foreground(outcome, dataset, dataset.test.x[torch.from_numpy(objects.indices)], objects.masks,
                                    samples=samples, teacher=True)
        shares["image"] = objects.indices[shares["image"].to_numpy()]  # the test index, not the position
        return {"indices": torch.from_numpy(objects.indices), "masks": torch.from_numpy(objects.masks),
                "tried": objects.tried, "native_found": objects.native_found, "shares": shares.to_dict("list")}

    path = outcome.folder / "foreground" / f"photos{count}_samples{samples}.pt" if outcome.folder else None
    value, seconds = checkpoints.cached(path, key, compute, with_seconds=True)
    objects = ObjectImages(value["indices"].numpy(), value["masks"].numpy(), value["tried"], value["native_found"],
                           OBJECT_SIDE)
    chosen = value["indices"]
    found = found_sentence(objects, classes, dataset.test.x.shape[-1])
    return PhotoForeground(dataset.test.x[chosen], dataset.test.y[chosen], objects, found,
                           pd.DataFrame(value["shares"]), seconds)


FOREGROUND_COMPARISONS = (("kd", "scratch"), ("teacher", "kd"), ("teacher", "scratch"))


def foreground_effects(shares: pd.DataFrame, comparisons: tuple[tuple[str, str], ...] = FOREGROUND_COMPARISONS,
                       ) -> pd.DataFrame:
    """Paired differences of the foreground share (points) for ``comparisons`` (model, baseline): over seeds
    (per-seed means, paired t) and over images (a bootstrap of the per-image differences averaged over seeds),
    and the claim's ``verdict`` under both (:func:`kdcourse.stats.joint_verdict`; over images alone with one seed)."""
    rows = []
    per_seed = shares.groupby(["model", "seed"])["share"].mean()
    per_image = shares.groupby(["model", "image"])["share"].mean()
    for model, baseline in comparisons:
        entries: dict[str, Effect | None] = {
            "seeds": paired_effect(per_seed[model], per_seed[baseline]) if shares.seed.nunique() > 1 else None,
            "images": bootstrap_effect(per_image[model].to_numpy(), per_image[baseline].to_numpy())}
        row: dict = {"model": model, "baseline": baseline}
        for over, effect in entries.items():
            for key in ("mean", "std", "low", "high", "verdict"):
                row[f"{over} {key}"] = getattr(effect, key) if effect is not None else np.nan
        row["verdict"] = joint_verdict(*(effect for effect in entries.values() if effect is not None))
        rows.append(row)
    return pd.DataFrame(rows)


def shap_record(models: Mapping[str, nn.Module], dataset: kd_data.ImageData, mean: tuple[float, ...],
                std: tuple[float, ...], *, images: int = 4, samples: int = 100) -> dict:
    """SHAP maps of ``models`` (by arm, on normalised images) on ``images`` evenly spaced test images,
    summed over colours and average-pooled by 4, JSON-ready: test ``images``, their ``labels``, ``maps``."""
    chosen = torch.arange(images) * (len(dataset.test) // images)
    x = kd_data.normalise_images(dataset.test.x[chosen], mean, std)
    reference = kd_data.normalise_images(dataset.train.x[:64], mean, std)
    maps = {arm: shap_maps(model.float(), x, reference, samples=samples).sum(1) for arm, model in models.items()}
    pooled = {arm: torch.nn.functional.avg_pool2d(torch.from_numpy(m)[:, None], 4)[:, 0].numpy()
              for arm, m in maps.items()}
    return {"images": chosen.tolist(), "labels": dataset.test.y[chosen].tolist(),
            "maps": {arm: np.round(m, 6).tolist() for arm, m in pooled.items()}}
