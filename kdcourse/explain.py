"""Explanations of image classifiers: LIME (Ribeiro et al. 2016), SHAP (Lundberg & Lee 2017), and where they point.

LIME perturbs an image by hiding groups of pixels (segments), watches how the model's probability
for a class changes, and fits a sparse linear model whose weights say how much each segment
supports the class. Works for any model that returns logits.

:func:`shap_maps` gives SHAP attributions by expected gradients (``shap.GradientExplainer``), which
only needs the model's gradients and is therefore correct for networks with in-place ReLUs and
residual additions, where ``shap.DeepExplainer``'s rewritten backward pass is not.
:func:`foreground_share` says how much of a map's positive mass lies on the object: on MNIST the
stroke pixels are the object exactly; on photographs :func:`grabcut_foreground` finds it without
hand labels, by OpenCV's GrabCut seeded with a centred box.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["LimeMap", "lime_explanation", "mnist_segmentation", "shap_maps", "foreground_share", "foreground_shares",
           "grabcut_foreground"]


@dataclass(frozen=True)
class LimeMap:
    """A LIME explanation of one image for one class.

    ``weights`` is ``(H, W)``: each pixel carries the linear-model weight of its segment (positive:
    the segment supports ``label``; negative: it speaks against it). ``score`` is the R² of LIME's
    local linear fit, ``probability`` the model's probability of ``label`` on the intact image.
    """

    label: int
    weights: np.ndarray
    segments: np.ndarray
    score: float
    probability: float


def mnist_segmentation() -> Callable[[np.ndarray], np.ndarray]:
    """Quickshift segmentation tuned for 28×28 digits (small kernel, so strokes split into parts)."""
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    return SegmentationAlgorithm("quickshift", kernel_size=1, max_dist=200, ratio=0.2, random_seed=0)


@torch.no_grad()
def lime_explanation(
    model: nn.Module,
    image: Tensor,
    *,
    preprocess: Callable[[Tensor], Tensor],
    label: int | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    segmentation: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 256,
) -> LimeMap:
    """Explain ``model``'s prediction on ``image``.

    Args:
        model: returns logits ``(N, C)``; it is put in eval mode.
        image: raw pixels ``(C, H, W)`` with values in [0, 1] (C = 1 or 3); hidden segments become 0.
        preprocess: maps a batch of raw pixels ``(N, C, H, W)`` to the model's input (e.g. normalisation).
        label: class to explain; default the model's prediction.
        num_samples: perturbed images LIME evaluates (more: stabler maps, slower).
        seed: seed of LIME's sampling, for reproducible maps.
        segmentation: LIME segmentation function; default :func:`mnist_segmentation` for 1-channel images.
    """
    with warnings.catch_warnings():  # lime imports tqdm.auto, which warns when ipywidgets is absent
        warnings.simplefilter("ignore")
        from lime import lime_image

    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) with C = 1 or 3, got {tuple(image.shape)}")
    if float(image.min()) < 0 or float(image.max()) > 1:
        raise ValueError("image must hold raw pixels in [0, 1]; normalise inside `preprocess`")
    channels = image.shape[0]
    model.eval()

    def classify(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).float().permute(0, 3, 1, 2)[:, :channels]
        probabilities = [torch.softmax(model(preprocess(x[i : i + batch_size])).float(), -1) for i in range(0, len(x), batch_size)]
        return torch.cat(probabilities).numpy()

    rgb = image.expand(3, -1, -1).permute(1, 2, 0).double().numpy()
    probabilities = classify(rgb[None])[0]
    target = int(probabilities.argmax()) if label is None else label
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    explanation = explainer.explain_instance(
        rgb,
        classify,
        labels=(target,),
        top_labels=None,
        hide_color=0,
        num_samples=num_samples,
        batch_size=batch_size,
        segmentation_fn=segmentation or mnist_segmentation(),
        random_seed=seed,
    )
    segments = explanation.segments
    weights = np.zeros(segments.shape, dtype=float)
    for segment, weight in explanation.local_exp[target]:
        weights[segments == segment] = weight
    return LimeMap(target, weights, segments, float(explanation.score), float(probabilities[target]))


def shap_maps(model: nn.Module, images: Tensor, background: Tensor, *, samples: int = 200, seed: int = 0,
              batch_size: int = 50) -> np.ndarray:
    """SHAP attributions ``(N, C, H, W)`` of ``model``'s predicted class for each of ``images`` ``(N, C, H, W)``.

    Expected gradients (``shap.GradientExplainer``) against ``background`` images ``(B, C, H, W)``
    drawn from the training set, with ``samples`` gradient evaluations per image; the attributions of
    an image add up, in expectation, to its logit minus the mean logit over the background. The
    model runs in eval mode on the CPU, in float32."""
    import shap

    if images.dim() != 4 or background.dim() != 4 or images.shape[1:] != background.shape[1:]:
        raise ValueError(f"images and background must be (N, C, H, W) of one shape, got {tuple(images.shape)} and {tuple(background.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            predicted = model(images.float()).argmax(1)
        explainer = shap.GradientExplainer(model, background.float(), batch_size=batch_size)
        torch.manual_seed(seed)
        np.random.seed(seed)  # shap draws the interpolation points and background rows from NumPy's global generator
        values, index = explainer.shap_values(images.float(), ranked_outputs=1, output_rank_order="max", nsamples=samples)
    finally:
        model.train(was_training)
    maps = np.asarray(values)[..., 0] if np.asarray(values).ndim == 5 else np.asarray(values[0])
    if not np.array_equal(np.asarray(index)[:, 0], predicted.numpy()):
        raise RuntimeError("SHAP explained another class than the predicted one")
    return maps


def foreground_share(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive attribution mass that lies on the foreground.

    ``attribution`` is ``(H, W)`` or ``(C, H, W)`` (summed over channels first), ``mask`` a boolean
    ``(H, W)``. Returns ``Σ max(a, 0) · mask / Σ max(a, 0)`` in [0, 1]; NaN when no pixel is positive."""
    values = np.asarray(attribution, dtype=float)
    if values.ndim == 3:
        values = values.sum(0)
    mask = np.asarray(mask, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"attribution {values.shape} and mask {mask.shape} must have the same (H, W)")
    positive = np.clip(values, 0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else float("nan")



def foreground_shares(model: nn.Module, images: Tensor, background: Tensor, masks: np.ndarray, *, samples: int = 200,
                      seed: int = 0) -> np.ndarray:
    """:func:`foreground_share` of the SHAP map (:func:`shap_maps`, in float32) of each of ``images``
    ``(N, C, H, W)`` on its foreground mask, ``masks`` boolean ``(N, H, W)``: an array ``(N,)`` in [0, 1]."""
    if len(masks) != len(images):
        raise ValueError(f"one mask per image: got {len(masks)} masks for {len(images)} images")
    maps = shap_maps(model.float(), images, background, samples=samples, seed=seed)
    return np.array([foreground_share(m, k) for m, k in zip(maps, masks, strict=True)])


def grabcut_foreground(image: np.ndarray | Tensor, margin: float = 0.1, iterations: int = 5,
                       side: int | None = 256) -> np.ndarray:
    """Boolean foreground mask ``(H, W)`` of an RGB image by GrabCut (OpenCV), no hand labels needed.

    ``image`` is uint8 ``(3, H, W)`` or ``(H, W, 3)``. GrabCut starts from a centred box that leaves
    ``margin`` of the side free on every edge (everything outside the box is background), then
    alternates colour models and a graph cut ``iterations`` times. Its smoothness cost is paid per pair of
    neighbouring pixels and its colour evidence per pixel, so on a tiny image (CIFAR-10's 32 px) the
    border of an object costs about as much as its inside gains and the cut mostly finds nothing. The
    image is therefore resized (bicubic) so that its longer side is ``side`` pixels before the cut
    (``None``: as it is), and the mask brought back to the image's size: a pixel is foreground when at
    least half of its area is. Meant for photographs whose object is roughly centred (CIFAR-10); look at
    some masks before trusting a statistic built on them."""
    import cv2

    array = image.numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"grabcut_foreground needs a uint8 RGB image, got {array.dtype} of shape {array.shape}")
    if not 0 < margin < 0.5:
        raise ValueError(f"margin must lie in (0, 0.5), got {margin}")
    if side is not None and side < 8:
        raise ValueError(f"side must be at least 8 pixels (or None to cut the image as it is), got {side}")
    height, width = array.shape[:2]
    work = np.ascontiguousarray(array[:, :, ::-1])  # OpenCV's channel order
    if side is not None and max(height, width) != side:
        scale = side / max(height, width)
        work = cv2.resize(work, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_CUBIC)
    rows, columns = work.shape[:2]
    box = (round(margin * columns), round(margin * rows), columns - 2 * round(margin * columns),
           rows - 2 * round(margin * rows))
    mask = np.zeros((rows, columns), np.uint8)
    cv2.setRNGSeed(0)
    cv2.grabCut(work, mask, box, np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64), iterations,
                cv2.GC_INIT_WITH_RECT)
    found = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    if (rows, columns) != (height, width):
        found = cv2.resize(found, (width, height), interpolation=cv2.INTER_AREA)
    return found >= 0.5
