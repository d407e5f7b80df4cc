"""The course's one rule for deciding whether a difference between two arms is an effect.

Every comparison in the book is *paired*: both arms share the seeds (or the test images), so we
look at the per-seed (per-image) differences ``a − b`` and ask how well their mean is pinned down.

The rule, stated once in the book's introduction:

* **clears the noise**: the 95 % interval of the mean difference excludes zero;
* **suggestive**: only the 80 % interval excludes zero (a difference worth a closer look, not a finding);
* **within noise**: the 80 % interval includes zero.

Over seeds the interval is Student's t interval of the paired differences (equivalently, a paired
t-test: p < 0.05 clears the noise, p < 0.2 is suggestive). Over test images, where the unit is an
image, it is a percentile bootstrap of the paired differences (:func:`bootstrap_effect`).
With three seeds the t interval is wide (t₀.₉₇₅ = 4.30 for two degrees of freedom): a difference
must be about 2.5 times its standard deviation to clear the noise.

Where two kinds of noise meet (a model retrained over seeds and scored on a sample of test images),
a claim must hold under both: :func:`joint_verdict` gives the weaker of the two verdicts, and
"within noise" when they point in opposite directions. Seeds measure how much the claim depends on
the training run, images how much it depends on the test sample; a difference that survives only
one of them has not been shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["VERDICTS", "RULE", "JOINT_RULE", "joint_verdict", "Effect", "paired_effect", "bootstrap_effect", "bootstrap_auc_effect", "verdict_for", "signed"]

VERDICTS = ("clears the noise", "suggestive", "within noise")
RULE = (
    "A paired difference clears the noise when its 95 % interval excludes zero, is suggestive when only "
    "its 80 % interval does, and is within noise otherwise."
)
JOINT_RULE = (
    "A claim judged over seeds and over test images must hold under both: its verdict is the weaker of the two, "
    "and within noise when they point in opposite directions."
)
LEVELS = (0.95, 0.80)


def signed(value: float, digits: int = 2) -> str:
    """``"+0.39"`` or ``"−0.69"`` (a typographic minus), the way the book prints a difference; a value
    that rounds to zero at ``digits`` has no sign: ``"0.00"``, never ``"+0.00"`` or ``"−0.00"``."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return text[1:]
    return "−" + text[1:] if text.startswith("-") else text


def verdict_for(interval_95: tuple[float, float], interval_80: tuple[float, float]) -> str:
    """The verdict word of :data:`VERDICTS` for the two intervals of a mean difference."""
    if interval_95[0] > 0 or interval_95[1] < 0:
        return VERDICTS[0]
    if interval_80[0] > 0 or interval_80[1] < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def joint_verdict(*effects: Effect) -> str:
    """The verdict of one claim judged under several kinds of noise (e.g. over seeds and over test images):
    the weakest of their verdicts (:data:`JOINT_RULE`); "within noise" when their means have opposite signs."""
    if not effects:
        raise ValueError("a joint verdict needs at least one effect")
    signs = {math.copysign(1.0, effect.mean) for effect in effects if effect.mean != 0}
    if len(signs) > 1:
        return VERDICTS[2]
    return max((effect.verdict for effect in effects), key=VERDICTS.index)


@dataclass(frozen=True)
class Effect:
    """A paired difference ``a − b`` with its spread, intervals and verdict.

    ``mean`` and ``std`` (sample standard deviation of the paired differences, ddof 1) are in
    ``unit`` (percentage points by default); ``low``/``high`` bound the 95 % interval of the mean,
    ``low80``/``high80`` the 80 % one; ``n`` counts the pairs (seeds or images); ``method`` is
    ``"paired t"`` or ``"bootstrap"``.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float
    low80: float
    high80: float
    p_value: float
    unit: str = "points"
    method: str = "paired t"
    over: str = "seeds"

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS`, by the rule of this module."""
        return verdict_for((self.low, self.high), (self.low80, self.high80))

    @property
    def clears_noise(self) -> bool:
        return self.verdict == VERDICTS[0]

    def short(self, digits: int = 2) -> str:
        """``"+0.39 ± 0.13 points"``: the mean and the standard deviation of the paired differences."""
        return f"{signed(self.mean, digits)} ± {self.std:.{digits}f} {self.unit}"

    def interval(self, digits: int = 2) -> str:
        """``"95 % interval +0.07 to +0.71"``."""
        return f"95 % interval {signed(self.low, digits)} to {signed(self.high, digits)}"

    def describe(self, digits: int = 2) -> str:
        """The full statement: ``"+0.39 ± 0.13 points (95 % interval +0.06 to +0.71, p = 0.0359, 3 seeds): clears the noise"``."""
        p = f", p = {self.p_value:.3g}" if self.method == "paired t" else ""
        return f"{self.short(digits)} ({self.interval(digits)}{p}, {self.n} {self.over}): {self.verdict}"

    def __str__(self) -> str:
        return self.describe()

    @classmethod
    def from_dict(cls, fields: dict) -> "Effect":
        """The effect that :meth:`as_dict` wrote (for instance a row of a recorded table); the verdict is recomputed."""
        names = ("mean", "std", "n", "low", "high", "low80", "high80", "p_value", "unit", "method", "over")
        values = {name: fields[name] for name in names if name in fields}
        values["n"] = int(values["n"])
        return cls(**values)

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready fields, with the verdict."""
        return {
            "mean": self.mean, "std": self.std, "n": self.n, "low": self.low, "high": self.high,
            "low80": self.low80, "high80": self.high80, "p_value": self.p_value, "unit": self.unit,
            "method": self.method, "over": self.over, "verdict": self.verdict,
        }


def _aligned_differences(a: Sequence[float] | pd.Series, b: Sequence[float] | pd.Series) -> np.ndarray:
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        joined = pd.concat({"a": a, "b": b}, axis=1).dropna()
        return (joined["a"] - joined["b"]).to_numpy(dtype=float)
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired values need the same length, got {a_arr.shape} and {b_arr.shape}")
    return a_arr - b_arr


def paired_effect(
    a: Sequence[float] | pd.Series,
    b: Sequence[float] | pd.Series,
    *,
    scale: float = 100.0,
    unit: str = "points",
    over: str = "seeds",
) -> Effect:
    """The effect of arm ``a`` over arm ``b`` from paired values (one per seed).

    ``a`` and ``b`` are equally long sequences in the same seed order, or Series indexed by seed
    (aligned on the index; seeds missing from either side are dropped). Values are multiplied by
    ``scale`` (default: fractions → percentage points). Needs at least two pairs.
    """
    d = _aligned_differences(a, b) * scale
    n = len(d)
    if n < 2:
        raise ValueError(f"a paired effect needs at least 2 paired values (seeds), got {n}")
    mean, std = float(d.mean()), float(d.std(ddof=1))
    se = std / math.sqrt(n)
    bounds = {}
    for level in LEVELS:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
        bounds[level] = (mean - half, mean + half)
    if se > 0:
        p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    else:
        p = 1.0 if mean == 0 else 0.0
    return Effect(mean, std, n, *bounds[0.95], *bounds[0.80], p, unit, "paired t", over)


def bootstrap_effect(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    scale: float = 100.0,
    unit: str = "points",
    resamples: int = 10_000,
    seed: int = 0,
    over: str = "images",
) -> Effect:
    """The effect of ``a`` over ``b`` where the unit is a test image: a paired percentile bootstrap.

    ``a`` and ``b`` hold one value per image (for example 1.0/0.0 for correct/wrong), in the same
    image order. The images are resampled with replacement ``resamples`` times (seeded), and the
    intervals are percentiles of the resampled mean difference. ``p_value`` is the two-sided
    bootstrap proportion of resampled means on the other side of zero.
    """
    d = _aligned_differences(a, b) * scale
    n = len(d)
    if n < 2:
        raise ValueError(f"a bootstrap effect needs at least 2 paired values (images), got {n}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for stable intervals, got {resamples}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    return _bootstrapped(float(d.mean()), float(d.std(ddof=1)), n, means, unit, over)


def _bootstrapped(observed: float, std: float, n: int, resampled: np.ndarray, unit: str, over: str) -> Effect:
    """The :class:`Effect` of an ``observed`` difference whose resampled values are ``resampled``:
    percentile intervals and the two-sided bootstrap p (the share of resamples on the other side of 0)."""
    low, high = np.quantile(resampled, [0.025, 0.975])
    low80, high80 = np.quantile(resampled, [0.10, 0.90])
    p = float(min(1.0, 2 * min((resampled <= 0).mean(), (resampled >= 0).mean())))
    return Effect(observed, std, n, float(low), float(high), float(low80), float(high80), p, unit, "bootstrap", over)


def _auc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of every row of ``scores`` ``(R, n)`` against the boolean rows of ``positive`` (Mann–Whitney, ties halved)."""
    ranks = stats.rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    return ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_auc_effect(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    scale: float = 100.0,
    unit: str = "AUC points",
    resamples: int = 2_000,
    seed: int = 0,
) -> Effect:
    """The difference in ROC AUC of two models scored on the same test images, by a paired bootstrap.

    ``scores_a``/``scores_b`` hold each image's score for the positive class (e.g. a probability),
    ``(n,)`` for one model each, or ``(S, n)`` for one model per seed (the difference is then the
    mean over seeds of the per-seed AUC differences); ``labels`` ``(n,)`` holds each image's 0/1
    label, in the same image order. The images are resampled with replacement (seeded; one
    resample for all models), the difference is recomputed on each resample, and the intervals are
    its percentiles. An AUC is not a mean over images, so ``std`` here is the standard deviation of
    the resampled differences (the bootstrap standard error), not a spread of per-image values.
    Values are multiplied by ``scale`` (an AUC difference of 0.01 is 1 point by default).
    """
    a, b, y = (np.asarray(v, dtype=float) for v in (scores_a, scores_b, labels))
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape != b.shape or a.ndim != 2 or y.shape != a.shape[1:]:
        raise ValueError(f"scores need one value per image (and seed) and labels one per image, got shapes "
                         f"{a.shape}, {b.shape}, {y.shape}")
    positive = y == 1
    if positive.all() or not positive.any():
        raise ValueError("an AUC needs test images of both classes")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for stable intervals, got {resamples}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y), size=(resamples, len(y)))
    keep = positive[index].any(axis=1) & ~positive[index].all(axis=1)  # a resample needs both classes
    index = np.concatenate([np.arange(len(y))[None], index[keep]])  # row 0: the observed test set

    def difference(rows: np.ndarray) -> np.ndarray:
        return np.mean([_auc_rows(sa[rows], positive[rows]) - _auc_rows(sb[rows], positive[rows]) for sa, sb in zip(a, b)],
                       axis=0) * scale

    resampled = difference(index)
    return _bootstrapped(float(resampled[0]), float(resampled[1:].std(ddof=1)), len(y), resampled[1:], unit, "images")
