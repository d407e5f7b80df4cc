"""Tests of kdcourse.explain: LIME maps of image classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdcourse.explain import LimeMap, foreground_shares, lime_explanation

BLOBS = [(3, 3), (3, 17), (17, 3), (17, 17), (8, 8), (8, 22), (22, 8), (22, 22)]


class TopLeftDetector(nn.Module):
    """Class 1's logit is the (scaled) sum of the top-left quadrant's pixels; class 0's is constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = x[:, 0, :14, :14].sum((1, 2))
        return torch.stack([torch.full_like(evidence, 5.0), 0.2 * evidence], 1)


def blob_image() -> torch.Tensor:
    """Bright 4×4 squares in every quadrant, on a faintly noisy black background."""
    image = torch.zeros(1, 28, 28)
    for row, col in BLOBS:
        image[0, row : row + 4, col : col + 4] = 1.0
    image += torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.1
    return image.clamp(0, 1)


def grid_segmentation(image: np.ndarray) -> np.ndarray:
    """Sixteen 7×7 blocks, numbered row by row."""
    rows, cols = np.indices(image.shape[:2])
    return (rows // 7) * 4 + cols // 7


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_lime_weights_concentrate_where_the_model_looks() -> None:
    explanation = lime_explanation(TopLeftDetector(), blob_image(), preprocess=identity, label=1, num_samples=200)
    assert isinstance(explanation, LimeMap)
    assert explanation.label == 1
    assert explanation.weights.shape == explanation.segments.shape == (28, 28)
    top_left = explanation.weights[:14, :14]
    elsewhere = np.concatenate([explanation.weights[:14, 14:].ravel(), explanation.weights[14:, :].ravel()])
    assert top_left.mean() > elsewhere.mean() + 0.1
    assert np.unravel_index(explanation.weights.argmax(), (28, 28)) < (14, 14)
    assert 0.9 < explanation.probability < 1.0


def test_lime_weights_per_segment_with_a_fixed_segmentation() -> None:
    explanation = lime_explanation(
        TopLeftDetector(), blob_image(), preprocess=identity, label=1, num_samples=200, segmentation=grid_segmentation
    )
    np.testing.assert_array_equal(explanation.segments, grid_segmentation(np.zeros((28, 28, 3))))
    weight_of = {segment: explanation.weights[explanation.segments == segment][0] for segment in range(16)}
    # every pixel of a segment carries the segment's weight
    for segment, weight in weight_of.items():
        assert np.all(explanation.weights[explanation.segments == segment] == weight)
    # segments 0, 1, 4, 5 form the top-left quadrant; 0 and 5 hold its bright squares
    bright = min(weight_of[0], weight_of[5])
    assert bright > 0.2
    # the faint background of the quadrant counts a little, the other quadrants only as sampling noise
    assert 0 < min(weight_of[1], weight_of[4]) and max(weight_of[1], weight_of[4]) < bright / 3
    outside = [weight_of[s] for s in range(16) if s not in (0, 1, 4, 5)]
    assert max(abs(w) for w in outside) < bright / 8
    assert explanation.score > 0.8


def test_lime_is_reproducible_and_explains_the_prediction_by_default() -> None:
    model, image = TopLeftDetector(), blob_image()
    first = lime_explanation(model, image, preprocess=identity, num_samples=100, seed=3, segmentation=grid_segmentation)
    second = lime_explanation(model, image, preprocess=identity, num_samples=100, seed=3, segmentation=grid_segmentation)
    assert first.label == 1  # the top-left evidence (≈ 0.2 · 40) beats the constant 5
    np.testing.assert_array_equal(first.weights, second.weights)


def test_lime_applies_preprocess_to_the_model_inputs() -> None:
    seen = []

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return (x - 0.5) / 0.5

    lime_explanation(TopLeftDetector(), blob_image(), preprocess=preprocess, label=1, num_samples=20, segmentation=grid_segmentation)
    assert seen and all(batch.shape[1:] == (1, 28, 28) for batch in seen)
    assert torch.allclose(seen[0][0], blob_image().float(), atol=1e-6)  # the intact image comes first, raw


@pytest.mark.parametrize("shape", [(28, 28), (2, 28, 28), (1, 1, 28, 28)])
def test_lime_rejects_bad_image_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="image"):
        lime_explanation(TopLeftDetector(), torch.rand(*shape), preprocess=identity)


@pytest.mark.parametrize("offset", [-0.5, 0.5])
def test_lime_rejects_pixels_outside_zero_one(offset: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lime_explanation(TopLeftDetector(), torch.rand(1, 28, 28) + offset, preprocess=identity)


def test_foreground_share_on_a_known_map():
    from kdcourse.explain import foreground_share

    attribution = np.array([[3.0, -1.0], [1.0, 0.0]])
    mask = np.array([[True, True], [False, False]])
    assert foreground_share(attribution, mask) == pytest.approx(3 / 4)  # negatives do not count
    assert foreground_share(np.stack([attribution, attribution]), mask) == pytest.approx(3 / 4)
    assert np.isnan(foreground_share(-np.ones((2, 2)), mask))
    with pytest.raises(ValueError, match="same"):
        foreground_share(attribution, np.ones((3, 3), bool))


def test_grabcut_finds_a_centred_object():
    from kdcourse.explain import grabcut_foreground

    rng = np.random.default_rng(0)
    image = (rng.normal(60, 10, (64, 64, 3))).clip(0, 255).astype(np.uint8)  # dark, noisy background
    truth = np.zeros((64, 64), bool)
    truth[20:44, 18:46] = True
    image[truth] = (220, 40, 40)  # a red block in the middle
    mask = grabcut_foreground(image)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    assert grabcut_foreground(image.transpose(2, 0, 1)).sum() == mask.sum()  # (3, H, W) accepted too


def test_shap_maps_explain_the_predicted_class_and_add_up():
    from kdcourse.explain import shap_maps

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images, background = torch.randn(4, 1, 4, 4), torch.randn(1, 1, 4, 4)  # one reference: no sampling error
    maps = shap_maps(model, images, background, samples=50)
    assert maps.shape == (4, 1, 4, 4)
    with torch.no_grad():
        logits = model(images)
        predicted = logits.argmax(1)
        expected = logits[torch.arange(4), predicted] - model(background)[:, predicted].mean(0)
    # for a linear model expected gradients are exact: the attributions sum to logit − background logit
    np.testing.assert_allclose(maps.reshape(4, -1).sum(1), expected.numpy(), rtol=1e-3, atol=1e-4)


def test_foreground_shares_score_each_image_on_its_own_mask():
    # a linear model on 4 x 4 images whose class-0 logit reads only the left half: its SHAP mass lies there
    torch.manual_seed(0)
    weights = torch.zeros(2, 1, 4, 4)
    weights[0, :, :, :2] = 1.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    model[1].weight.data = weights.flatten(1)
    images = torch.rand(3, 1, 4, 4) + 1.0  # class 0 predicted for every image
    left = np.zeros((4, 4), dtype=bool)
    left[:, :2] = True
    shares = foreground_shares(model, images, torch.zeros(2, 1, 4, 4), np.stack([left, ~left, left]), samples=20)
    assert shares.shape == (3,) and shares[[0, 2]] == pytest.approx(1.0) and shares[1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one mask per image"):
        foreground_shares(model, images, torch.zeros(2, 1, 4, 4), np.stack([left, left]), samples=5)
