"""The robustness sweeps' corruptions: the asked-for amount, exactly, and the asked-for shape."""

from __future__ import annotations

import pytest
import torch

from kdcourse.corruptions import center_black, corrupt_fraction, noisy_labels, quarter_black, training_fraction


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 1.0])
def test_label_noise_changes_exactly_the_asked_rate_to_other_classes(rate):
    labels = torch.arange(1000) % 10
    noisy, flipped = noisy_labels(labels, rate, 10, generator())
    changed = (noisy != labels).nonzero().squeeze(1)
    assert len(changed) == round(rate * 1000)
    assert torch.equal(changed, flipped)
    assert noisy.min() >= 0 and noisy.max() < 10
    again, _ = noisy_labels(labels, rate, 10, generator())
    assert torch.equal(noisy, again)  # seeded


def test_label_noise_spreads_over_the_other_classes():
    labels = torch.zeros(9000, dtype=torch.long)
    noisy, _ = noisy_labels(labels, 1.0, 10, generator(3))
    counts = torch.bincount(noisy, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 850  # about 1000 each


def test_training_fraction_is_stratified_and_exact():
    labels = torch.arange(1000) % 4
    index = training_fraction(labels, 0.25, seed=1)
    counts = torch.bincount(labels[index])
    assert len(index) == 250 and counts.max() - counts.min() <= 1
    assert torch.equal(training_fraction(labels, 1.0), torch.arange(1000))
    with pytest.raises(ValueError, match="fewer than one per class"):
        training_fraction(labels, 0.002)


def test_center_black_blacks_a_centred_square_of_side_in_range():
    x = torch.full((50, 3, 224, 224), 255, dtype=torch.uint8)
    out = center_black(x, generator())
    for image in out:
        black = (image == 0).all(0)
        rows, cols = black.any(1).nonzero().squeeze(1), black.any(0).nonzero().squeeze(1)
        side = len(rows)
        assert 200 <= side < 224 and len(cols) == side
        assert black.sum() == side * side  # a full square
        assert rows[0] == (224 - side) // 2 and cols[0] == (224 - side) // 2
    assert (x == 255).all()  # the input is untouched


def test_quarter_black_blacks_exactly_one_quarter():
    x = torch.ones(40, 3, 224, 224)
    out = quarter_black(x, generator())
    seen = set()
    for image in out:
        black = (image == 0).all(0)
        assert black.sum() == 112 * 112
        quarters = [black[:112, :112].all(), black[:112, 112:].all(), black[112:, :112].all(), black[112:, 112:].all()]
        assert sum(bool(q) for q in quarters) == 1
        seen.add(next(i for i, q in enumerate(quarters) if q))
    assert seen == {0, 1, 2, 3}


def test_corrupt_fraction_occludes_exactly_that_many_images():
    x = torch.full((100, 3, 224, 224), 200, dtype=torch.uint8)
    out, chosen = corrupt_fraction(x, 0.3, quarter_black, generator())
    occluded = (out == 0).flatten(1).any(1).nonzero().squeeze(1)
    assert len(chosen) == 30 and torch.equal(occluded, chosen)
    assert corrupt_fraction(x, 0.0, quarter_black, generator())[1].numel() == 0


@pytest.mark.parametrize("call", [
    lambda: center_black(torch.zeros(2, 3, 100, 100), generator()),  # side below the range
    lambda: quarter_black(torch.zeros(2, 3, 5, 5), generator()),
    lambda: noisy_labels(torch.zeros(3, dtype=torch.long), 1.5, 10, generator()),
    lambda: corrupt_fraction(torch.zeros(2, 3, 8, 8), -0.1, quarter_black, generator()),
    lambda: quarter_black(torch.zeros(2, 3, 8, 6), generator()),
])
def test_impossible_settings_are_refused(call):
    with pytest.raises(ValueError):
        call()
