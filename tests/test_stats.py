"""Tests of kdcourse.stats: the one rule that decides "clears the noise", "suggestive", "within noise"."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdcourse.stats import VERDICTS, Effect, bootstrap_effect, paired_effect


def test_paired_effect_matches_scipy_paired_t_test() -> None:
    a, b = [0.9893, 0.9892, 0.9897], [0.9850, 0.9868, 0.9848]
    effect = paired_effect(a, b)
    d = (np.array(a) - np.array(b)) * 100
    assert effect.mean == pytest.approx(d.mean())
    assert effect.std == pytest.approx(d.std(ddof=1))
    assert effect.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    low, high = stats.t.interval(0.95, 2, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(3))
    assert (effect.low, effect.high) == pytest.approx((low, high))
    assert effect.n == 3 and effect.verdict == "clears the noise" and effect.clears_noise


@pytest.mark.parametrize(
    ("differences", "verdict"),
    [
        # the chapters' cases: KD over scratch (+0.39 ± 0.13), subclass KD over KD (+0.35 ± 0.24), a null
        ([0.43, 0.24, 0.49], "clears the noise"),
        ([0.62, 0.29, 0.14], "suggestive"),
        ([0.10, -0.12, 0.05], "within noise"),
    ],
)
def test_verdicts_follow_the_two_intervals(differences: list[float], verdict: str) -> None:
    effect = paired_effect(np.array(differences) / 100, np.zeros(3))
    assert effect.verdict == verdict
    excludes_95 = effect.low > 0 or effect.high < 0
    excludes_80 = effect.low80 > 0 or effect.high80 < 0
    assert excludes_95 == (verdict == VERDICTS[0])
    assert (excludes_80 and not excludes_95) == (verdict == VERDICTS[1])
    assert (effect.p_value < 0.05) == excludes_95 and (effect.p_value < 0.2) == excludes_80


def test_negative_effects_clear_the_noise_too() -> None:
    effect = paired_effect([0.9420, 0.9425, 0.9440], [0.9490, 0.9500, 0.9505])
    assert effect.mean < 0 and effect.high < 0 and effect.verdict == "clears the noise"
    assert effect.short().startswith("−0.")  # a typographic minus


def test_series_are_aligned_on_their_seed_index() -> None:
    a = pd.Series({0: 0.99, 1: 0.98, 2: 0.97})
    b = pd.Series({2: 0.96, 0: 0.98, 1: 0.97, 7: 0.5})  # another order and an unpaired seed
    effect = paired_effect(a, b)
    assert effect.n == 3 and effect.mean == pytest.approx(1.0) and effect.std == pytest.approx(0.0)
    assert effect.verdict == "clears the noise"


def test_identical_arms_are_within_noise() -> None:
    effect = paired_effect([0.5, 0.6], [0.5, 0.6])
    assert effect.mean == 0 and effect.p_value == 1.0 and effect.verdict == "within noise"


def test_describe_states_interval_p_and_verdict() -> None:
    text = paired_effect([0.9893, 0.9892, 0.9897], [0.9850, 0.9868, 0.9848]).describe()
    assert text.startswith("+0.39 ± 0.13 points (95 % interval +0.06 to +0.71")
    assert "p = 0.0359" in text and "3 seeds" in text and text.endswith(": clears the noise")
    fields = json.loads(json.dumps(paired_effect([1, 2], [0, 0]).as_dict()))  # JSON-ready
    assert Effect.from_dict({**fields, "n": 2.0}) == paired_effect([1, 2], [0, 0])


@pytest.mark.parametrize("bad", [([0.9], [0.8]), ([], [])])
def test_one_pair_is_an_error(bad: tuple[list[float], list[float]]) -> None:
    with pytest.raises(ValueError, match="at least 2 paired values"):
        paired_effect(*bad)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_effect([0.9, 0.8, 0.7], [0.8, 0.7])


def test_bootstrap_over_images_finds_a_real_gain_and_no_gain() -> None:
    rng = np.random.default_rng(0)
    b = (rng.random(2000) < 0.80).astype(float)
    a = np.where(rng.random(2000) < 0.15, 1.0, b)  # a fixes 15 % of images: about +3 points
    gain = bootstrap_effect(a, b)
    assert gain.method == "bootstrap" and gain.over == "images" and gain.n == 2000
    assert gain.low > 0 and gain.verdict == "clears the noise"
    assert gain.low < gain.mean < gain.high
    null = bootstrap_effect(b, b[rng.permutation(2000)], seed=1)
    assert null.verdict == "within noise"
    assert bootstrap_effect(a, b).low == gain.low  # seeded


def test_bootstrap_rejects_too_few_resamples() -> None:
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_effect([1, 0, 1], [0, 0, 1], resamples=10)


def test_bootstrap_auc_effect_matches_sklearn_and_finds_a_real_gain():
    from sklearn.metrics import roc_auc_score

    from kdcourse.stats import bootstrap_auc_effect

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    good = labels + rng.normal(0, 0.6, 400)  # separates the classes well
    poor = labels + rng.normal(0, 2.0, 400)
    effect = bootstrap_auc_effect(good, poor, labels)
    assert effect.mean == pytest.approx((roc_auc_score(labels, good) - roc_auc_score(labels, poor)) * 100)
    assert effect.verdict == "clears the noise" and effect.low > 0 and effect.over == "images"
    same = bootstrap_auc_effect(good, good + rng.normal(0, 1e-3, 400), labels)
    assert same.verdict == "within noise"
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_auc_effect(good, poor, np.ones(400))
    with pytest.raises(ValueError, match="one value per image"):
        bootstrap_auc_effect(good, poor[:10], labels)


def test_bootstrap_auc_effect_averages_over_seeds():
    from sklearn.metrics import roc_auc_score

    from kdcourse.stats import bootstrap_auc_effect

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    a = labels + rng.normal(0, 1.0, (3, 300))
    b = labels + rng.normal(0, 1.5, (3, 300))
    effect = bootstrap_auc_effect(a, b, labels, resamples=500)
    expected = np.mean([roc_auc_score(labels, sa) - roc_auc_score(labels, sb) for sa, sb in zip(a, b)]) * 100
    assert effect.mean == pytest.approx(expected)


def _effect_with(verdict: str, mean: float = 1.0) -> Effect:
    """An effect whose intervals give ``verdict`` for a positive (or negative) ``mean``."""
    sign = 1.0 if mean > 0 else -1.0
    bounds = {VERDICTS[0]: ((0.5, 1.5), (0.7, 1.3)), VERDICTS[1]: ((-0.1, 2.1), (0.2, 1.8)),
              VERDICTS[2]: ((-1.0, 3.0), (-0.5, 2.5))}[verdict]
    (low, high), (low80, high80) = [sorted((sign * a, sign * b)) for a, b in bounds]
    return Effect(mean, 0.5, 3, low, high, low80, high80, 0.5)


def test_joint_verdict_is_the_weaker_one_and_refuses_opposite_signs():
    from kdcourse.stats import joint_verdict

    for a in VERDICTS:
        for b in VERDICTS:
            expected = VERDICTS[max(VERDICTS.index(a), VERDICTS.index(b))]
            assert joint_verdict(_effect_with(a), _effect_with(b)) == expected
    assert _effect_with(VERDICTS[0], -1.0).verdict == VERDICTS[0]
    assert joint_verdict(_effect_with(VERDICTS[0]), _effect_with(VERDICTS[0], -1.0)) == VERDICTS[2]
    with pytest.raises(ValueError):
        joint_verdict()


def test_signed_prints_a_value_that_rounds_to_zero_without_a_sign():
    from kdcourse.stats import signed

    assert signed(0.39) == "+0.39" and signed(-0.69) == "−0.69" and signed(0.006) == "+0.01"
    for value in (0.0, -0.0, 0.004, -0.004, -1e-12):
        assert signed(value) == "0.00"
    assert signed(-0.04, 1) == "0.0" and signed(-0.06, 1) == "−0.1" and signed(0.4, 0) == "0"
