"""Explanations of image classifiers with LIME (Ribeiro et al. 2016).

LIME perturbs an image by hiding groups of pixels (segments), watches how the model's probability
for a class changes, and fits a sparse linear model whose weights say how much each segment
supports the class. Works for any model that returns logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["LimeMap", "lime_explanation", "mnist_segmentation"]


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
