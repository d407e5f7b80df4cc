"""The tables and sentences of the MNIST distillation chapter.

They are drawn from ``runs`` of :func:`kdcourse.studies.mnist_distillation.run_study` (the live run in
the full profile, the recorded full-profile rows in a smoke build). :class:`ArmComparison` holds the
headline arms and their paired effects, :class:`Plateau` the grid against the headline student,
:class:`TemperatureCurve` the students at one α along T. Accuracies in ``runs`` are fractions; tables
and sentences give them in %, and differences between arms in percentage points, paired by seed.
The chapter's figures are in :mod:`kdcourse.studies.mnist_distillation_figures`, what the networks
cost in :mod:`kdcourse.studies.mnist_distillation_costs` and its closing list in
:mod:`kdcourse.studies.mnist_distillation_lessons`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from kdcourse import data as kd_data
from kdcourse import stats
from kdcourse.course import tables
from kdcourse.studies.common import json_ready, json_records
from kdcourse.studies.mnist_distillation import StudyOutcome, arm_accuracy, grid_effects, grid_table, paired_comparison
from kdcourse.studies.mnist_distillation_costs import COST_TABLE

__all__ = [
    "HEADLINE_HEADERS", "HEADLINE_CAPTION", "REPORTED",
    "split_text", "procedure_text", "overview_table", "training_time_text",
    "ArmComparison", "compare_arms", "headline_table", "gains_table", "wins_text", "reported_table",
    "ranking_table", "Plateau", "plateau", "plateau_text",
    "TemperatureCurve", "temperature_curve", "temperature_table", "temperature_text",
    "lime_table", "results_summary", "results_record",
]

HEADLINE_HEADERS = {
    "test_accuracy": "test accuracy (%)", "f1": "macro F1 (%)", "val_accuracy": "validation accuracy (%)",
}
HEADLINE_CAPTION = "Accuracy in %, mean ± std over seeds; the best setting is chosen on validation"
# test accuracy (%) that the sources quote: teacher, KD student at T = 4, α = 0.5, best KD student, scratch
REPORTED = {
    "the MNIST–MHIST report": ("99.31", "98.79", "98.79 (T=4, α=0.5)", "98.11"),
    "the ESKD report": ("98.78", "97.48", "98.08 (T=16, α=0.9)", "97.20"),
    "the subclass poster": ("99.29", "98.85", "98.89 (T=16, α=0.3)", "98.11"),
}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _power_of_ten(value: float) -> str:
    """A learning rate as MyST math: 1e-3 as ten to the minus three, 3e-3 as three times that."""
    mantissa, exponent = f"{value:.0e}".split("e")
    power = f"10^{{{int(exponent)}}}"
    return f"${power}$" if mantissa == "1" else f"${mantissa} \\cdot {power}$"


def split_text(dataset: kd_data.ImageData) -> str:
    """The sentence on the validation split of ``dataset``: its size and what it is used for."""
    total = len(dataset.train) + len(dataset.val)
    return (
        f"""{len(dataset.val):,} of the {total:,} training images are set aside as a
**validation split**, always the same ones: every choice we make (which epoch to keep, which $T$ and
$\\alpha$ are best) is made on it. The {len(dataset.test):,} test images are only used to report."""
    )


def procedure_text(config: Mapping[str, object]) -> str:
    """What :func:`run_study` does for each seed, as a Markdown list, for ``config`` (a
    :class:`StudyConfig` as a dict, as the result files record it)."""
    c = config
    grid = len(c["temperatures"]) * len(c["alphas"])
    teacher_lr, student_lr = _power_of_ten(c["teacher_lr"]), _power_of_ten(c["student_lr"])
    return (
        f"""* it trains the teacher for {_plural(c['teacher_epochs'], 'epoch')} (Adam, learning rate {teacher_lr}
  with cosine decay, batches of {c['teacher_batch_size']}, random shifts of up to {c['teacher_shift']} pixels),
  keeping the epoch with the best validation accuracy;
* it computes the teacher's logits on the training images **once** (the students see un-augmented
  images, so those logits never change) and caches them on disk;
* it trains all {grid} students of the grid
  ({len(c['temperatures'])} temperatures × {len(c['alphas'])} weights) and the student from scratch
  ($\\alpha = 0$) for {_plural(c['student_epochs'], 'epoch')} with Adam (learning rate {student_lr}
  with cosine decay, batches of {c['student_batch_size']}), {c['stack_size']} at a time stacked into one
  `StackedMLP`: each student has its own weights, $T$ and $\\alpha$, and each layer of the stack is
  one batched matrix product."""
    )


def overview_table(runs: pd.DataFrame) -> tables.Table:
    """Validation and test accuracy (%) of each model of ``runs``, mean ± std over its runs."""
    overview = runs.groupby("model").agg(
        val_accuracy_mean=("val_accuracy", "mean"), val_accuracy_std=("val_accuracy", "std"),
        test_accuracy_mean=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
        runs=("seed", "size"),
    )
    headers = {"val_accuracy": "validation accuracy (%)", "test_accuracy": "test accuracy (%)",
               "runs": "runs (seeds × settings)"}
    return tables.readable(overview, headers, scale=100,
                           caption="This run: accuracy in %, mean ± std over the runs of each model")


def training_time_text(train_seconds: float, device: str, wall_seconds: float | None = None) -> str:
    """How long training took on ``device``; with ``wall_seconds``, as the share of a recorded run."""
    if wall_seconds is None:
        return f"Training took {train_seconds / 60:.1f} minutes on {device}."
    return (
        f"""In the recorded full-profile run ({device}), training took {train_seconds / 60:.1f} minutes
of the chapter's {wall_seconds / 60:.1f} minutes."""
    )


@dataclass(frozen=True)
class ArmComparison:
    """The arms of a study at its headline ``head`` = (T, α) and at the grid point ``selected`` on validation.

    ``arms``: the rows of ``runs`` of the teacher, the KD student at ``head``, the KD student at
    ``selected`` and the scratch student, by display name; ``headline``: their accuracies (fractions,
    mean and std over seeds); ``gains``: the paired effects (points) of KD at ``head`` over scratch,
    of KD at ``selected`` over scratch, and of ``selected`` over ``head``, by name."""

    runs: pd.DataFrame
    head: tuple[float, float]
    selected: tuple[float, float]
    arms: dict[str, pd.DataFrame]
    headline: pd.DataFrame
    gains: dict[str, stats.Effect]

    @property
    def gain(self) -> stats.Effect:
        """KD at ``head`` over the scratch student."""
        return next(iter(self.gains.values()))

    @property
    def best_over_head(self) -> stats.Effect:
        """KD at ``selected`` over KD at ``head``."""
        return list(self.gains.values())[2]

    def per_seed(self) -> pd.Series:
        """Test accuracy of KD at ``head`` minus that of the scratch student, by seed (fractions)."""
        kd = arm_accuracy(self.runs, "kd", *self.head)
        return (kd - arm_accuracy(self.runs, "scratch")).dropna()

    def wins(self) -> int:
        """Seeds on which KD at ``head`` beats the scratch student."""
        return int((self.per_seed() > 0).sum())


def _kd_arm(runs: pd.DataFrame, temperature: float, alpha: float) -> pd.DataFrame:
    return runs[(runs.model == "kd") & (runs.temperature == temperature) & (runs.alpha == alpha)]


def compare_arms(runs: pd.DataFrame, head: tuple[float, float]) -> ArmComparison:
    """The :class:`ArmComparison` of ``runs`` at ``head`` = (T, α); the best grid point is chosen on validation."""
    (t, a), selected = head, tuple(grid_table(runs, "val_accuracy")["mean"].idxmax())
    arms = {
        "teacher (CNN)": runs[runs.model == "teacher"],
        f"KD student, T={t:g}, α={a:g}": _kd_arm(runs, t, a),
        f"KD student, best on validation (T={selected[0]:g}, α={selected[1]:g})": _kd_arm(runs, *selected),
        "student from scratch (α=0)": runs[runs.model == "scratch"],
    }
    headline = pd.DataFrame([
        {"model": name, "test_accuracy_mean": r.test_accuracy.mean(), "test_accuracy_std": r.test_accuracy.std(),
         "f1_mean": r.f1.mean(), "f1_std": r.f1.std(), "val_accuracy_mean": r.val_accuracy.mean(),
         "val_accuracy_std": r.val_accuracy.std(), "seeds": len(r)}
        for name, r in arms.items()
    ])
    gains = {
        f"KD (T={t:g}, α={a:g}) over scratch": paired_comparison(runs, t, a),
        f"KD best on validation (T={selected[0]:g}, α={selected[1]:g}) over scratch":
            paired_comparison(runs, *selected),
        f"KD best on validation over KD (T={t:g}, α={a:g})": paired_comparison(runs, *selected, baseline=(t, a)),
    }
    return ArmComparison(runs, (t, a), selected, arms, headline, gains)


def headline_table(comparison: ArmComparison) -> tables.Table:
    """Test accuracy, macro F1 and validation accuracy (%) of the four arms, mean ± std over seeds."""
    return tables.readable(comparison.headline, HEADLINE_HEADERS, scale=100, caption=HEADLINE_CAPTION)


def gains_table(comparison: ArmComparison) -> tables.Table:
    """The three paired differences of ``comparison`` in test accuracy (points)."""
    return tables.paired_effects(comparison.gains, ["comparison (test accuracy)"],
                                 caption="Paired differences in test accuracy, by seed")


def wins_text(comparison: ArmComparison) -> str:
    """The sentence on the KD student at the headline (T, α) against its scratch twin, seed by seed."""
    (t, a), per_seed = comparison.head, comparison.per_seed()
    return (
        f"""The KD student at $T = {t:g}$, $\\alpha = {a:g}$ beats its scratch twin on {comparison.wins()} of
{len(per_seed)} seeds; its difference from it is {comparison.gain.describe()}."""
    )


def reported_table(comparison: ArmComparison) -> tables.Table:
    """This book's test accuracies (mean over seeds, %) beside those the sources quote (:data:`REPORTED`)."""
    def mean_pct(frame: pd.DataFrame) -> str:
        return f"{100 * frame.test_accuracy.mean():.2f}"

    (t, a), (t_best, a_best) = comparison.head, comparison.selected
    teacher, head, best, scratch = comparison.arms.values()
    ours = [mean_pct(teacher), mean_pct(head), f"{mean_pct(best)} (T={t_best:g}, α={a_best:g})", mean_pct(scratch)]
    names = ["teacher", f"KD student (T={t:g}, α={a:g})", "KD student, best setting", "student from scratch"]
    reported = pd.DataFrame({"model": names, "this book": ours, **{s: list(v) for s, v in REPORTED.items()}})
    return tables.readable(reported, caption="Test accuracy (%). This book: mean over seeds, setting chosen on "
                           "validation; the sources: single runs, chosen on the test set; — = not reported.")


def ranking_table(runs: pd.DataFrame, head: tuple[float, float], top: int = 8) -> tables.Table:
    """The ``top`` grid points by validation accuracy (%), with their test accuracy and their paired
    test difference (points, 95 % interval, verdict) from the KD student at ``head``."""
    val_grid, test_grid = grid_table(runs, "val_accuracy"), grid_table(runs, "test_accuracy")
    against = grid_effects(runs, baseline=head)
    ranking = pd.DataFrame({
        "val_mean": val_grid["mean"], "val_std": val_grid["std"],
        "test_mean": test_grid["mean"], "test_std": test_grid["std"],
    }).sort_values("val_mean", ascending=False)
    shown = [i in against.index for i in ranking.index]
    rows = [against.loc[i] if known else None for i, known in zip(ranking.index, shown)]
    ranking["difference"] = [f"{stats.signed(r['mean'])} ± {r['std']:.2f}" if r is not None else "reference"
                             for r in rows]
    ranking["interval"] = [f"{stats.signed(r['low'])} to {stats.signed(r['high'])}" if r is not None else "—"
                           for r in rows]
    ranking["verdict"] = [r["verdict"] if r is not None else "—" for r in rows]
    ranking.index = pd.MultiIndex.from_tuples([(f"{t:g}", f"{a:g}") for t, a in ranking.index], names=["T", "α"])
    headers = {"val": "validation accuracy (%)", "test": "test accuracy (%)",
               "difference": f"test difference from T={head[0]:g}, α={head[1]:g} (points, paired)",
               "interval": "95 % interval (points)"}
    caption = f"The {min(top, len(ranking))} best grid points on validation, mean ± std over seeds"
    return tables.readable(ranking.head(top), headers, scale=100, caption=caption)


@dataclass(frozen=True)
class Plateau:
    """The grid points with T ≥ the headline T against the headline (T, α), paired by seed.

    ``effects``: rows of :func:`grid_effects` (points); ``by_chance``: how many of them one expects
    to clear the noise at the 95 % level when nothing differs."""

    head: tuple[float, float]
    effects: pd.DataFrame

    @property
    def by_chance(self) -> float:
        return 0.05 * len(self.effects)

    @property
    def clear(self) -> pd.DataFrame:
        return self.effects[self.effects.verdict == stats.VERDICTS[0]]

    @property
    def flat(self) -> bool:
        """No more differences clear the noise than chance would give."""
        return len(self.clear) <= max(1, round(self.by_chance))

    @property
    def largest(self) -> float:
        """The largest absolute mean difference (points)."""
        return float(self.effects["mean"].abs().max())

    def count(self, verdict: str) -> int:
        return int((self.effects.verdict == verdict).sum())

    def verdict_counts(self) -> str:
        """``"7 are within noise, 1 suggestive and 0 clear the noise"``."""
        clear = len(self.clear)
        return (f"{self.count(stats.VERDICTS[2])} are within noise,\n  {self.count(stats.VERDICTS[1])} suggestive "
                f"and {clear} clear{'s' if clear == 1 else ''} the noise")


def plateau(runs: pd.DataFrame, head: tuple[float, float]) -> Plateau:
    """The :class:`Plateau` of ``runs`` at ``head`` = (T, α)."""
    against = grid_effects(runs, baseline=head)
    return Plateau(head, against[against.index.get_level_values("temperature") >= head[0]])


def plateau_text(found: Plateau) -> str:
    """The paragraph that reads the grid against the headline student: verdicts, largest difference, chance."""
    (t, a), clear = found.head, found.clear
    clear_text = "; ".join(f"$T = {ct:g}$, $\\alpha = {ca:g}$: {stats.signed(r['mean'])} ± {r['std']:.2f} points"
                           for (ct, ca), r in clear.iterrows())
    listed = f" ({clear_text})" if len(clear) else ""
    closing = ("Read the heatmap as a landscape with a broad plateau, not as a ranking." if found.flat else
               "More settings differ than chance would explain: here the choice of $T$ and $\\alpha$ matters.")
    n = len(found.effects)
    return (
        f"""The grid point with the highest mean **validation** accuracy is the one we would deploy; its test
accuracy is the honest estimate of what it achieves. Compared with the student at $T = {t:g}$,
$\\alpha = {a:g}$, seed by seed, the other {n} grid points with $T \\ge {t:g}$ split
into {found.count(stats.VERDICTS[2])} within noise, {found.count(stats.VERDICTS[1])} suggestive and
{len(clear)} that clear{"s" if len(clear) == 1 else ""} the noise{listed}; the largest of these differences
is {found.largest:.2f} points. Of {n} comparisons at the 95 % level, one expects
{found.by_chance:.1f} to clear the noise by chance alone, even where nothing differs.
{closing}"""
    )


@dataclass(frozen=True)
class TemperatureCurve:
    """The KD students at one α against the scratch student, along the temperatures of the grid.

    ``temperatures`` ascending; ``gains``: paired effect (points) over scratch by ``"T = …"``;
    ``head_t``: the headline temperature."""

    alpha: float
    temperatures: list[float]
    gains: dict[str, stats.Effect]
    head_t: float

    def at(self, temperature: float) -> stats.Effect | None:
        return self.gains.get(f"T = {temperature:g}")

    @property
    def low(self) -> tuple[float, stats.Effect]:
        """The lowest temperature and its effect."""
        return self.temperatures[0], self.gains[f"T = {self.temperatures[0]:g}"]

    @property
    def second(self) -> tuple[float, stats.Effect]:
        """The second lowest temperature and its effect."""
        return self.temperatures[1], self.gains[f"T = {self.temperatures[1]:g}"]

    @property
    def rising(self) -> bool:
        """Both lowest temperatures gain less than the headline temperature."""
        reference, (second_t, second) = self.at(self.head_t), self.second
        return (reference is not None and second_t < self.head_t
                and self.low[1].mean < reference.mean and second.mean < reference.mean)


def temperature_curve(runs: pd.DataFrame, head_t: float) -> TemperatureCurve:
    """The :class:`TemperatureCurve` at α = 0.5 (or the grid's first α when 0.5 is not in it)."""
    test_grid = grid_table(runs, "test_accuracy")
    alphas = test_grid.index.get_level_values("alpha").unique()
    alpha = 0.5 if 0.5 in alphas else alphas[0]
    temperatures = [float(t) for t in test_grid.xs(alpha, level="alpha").index]
    gains = {f"T = {t:g}": paired_comparison(runs, t, alpha) for t in temperatures}
    return TemperatureCurve(alpha, temperatures, gains, head_t)


def temperature_table(curve: TemperatureCurve) -> tables.Table:
    """The paired differences of the curve's KD students from the scratch student (points)."""
    caption = f"KD student (α = {curve.alpha:g}) minus the scratch student, test accuracy, by seed"
    return tables.paired_effects(curve.gains, ["temperature"], caption=caption)


def temperature_text(curve: TemperatureCurve) -> str:
    """The paragraph on the curve: the two lowest temperatures, then the range from the headline T on."""
    (low_t, low), (second_t, second), head_t = curve.low, curve.second, curve.head_t
    reference = curve.at(head_t)
    high = [e for t, e in zip(curve.temperatures, curve.gains.values()) if t >= head_t]
    counts = pd.Series([e.verdict for e in high]).value_counts()
    verdicts = (f"each {counts.index[0]}" if len(counts) == 1
                else ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))
    share = ""
    if reference is not None and reference.mean > 0 and second.mean > 0 and second_t < head_t:
        share = f", {second.mean / reference.mean:.0%} of the gain at $T = {head_t:g}$".replace("%", " %")
    lowest, highest = stats.signed(min(e.mean for e in high)), stats.signed(max(e.mean for e in high))
    return (
        f"""At $\\alpha = {curve.alpha:g}$ and $T = {low_t:g}$ the difference from the scratch student is
{low.describe()}; at $T = {second_t:g}$ it is {second.short()} ({second.verdict}{share}). From
$T = {head_t:g}$ on, the differences lie between {lowest} and
{highest} points ({verdicts})."""
    )


def lime_table(correlations: pd.DataFrame, head: tuple[float, float]) -> tables.Table:
    """The correlations of :func:`kdcourse.studies.mnist_distillation_figures.lime_figure` for a reader;
    ``head`` is the KD student's (T, α)."""
    headers = {"kd": f"KD student (T={head[0]:g}, α={head[1]:g})", "scratch": "student from scratch"}
    return tables.readable(correlations, headers,
                           caption="Pixel-wise correlation of each student's LIME map with the teacher's (seed 0)")


def results_summary(comparison: ArmComparison, seeds: tuple[int, ...]) -> str:
    """The one-paragraph summary that a result file opens with (test accuracy in %, paired KD gain)."""
    (t, a), (t_best, a_best) = comparison.head, comparison.selected
    cells = tables.readable(comparison.headline, HEADLINE_HEADERS, scale=100).frame
    cell = dict(zip(cells["model"], cells[HEADLINE_HEADERS["test_accuracy"]]))
    teacher, head, best, scratch = (cell[name] for name in comparison.arms)
    return (
        f"Teacher {teacher} %; KD student (T={t:g}, α={a:g}) {head} %; "
        f"student from scratch {scratch} %; KD gain (paired) {comparison.gain.describe()}. "
        f"Best grid point on validation: T={t_best:g}, α={a_best:g}, test {best} %. "
        f"Test accuracy in %, mean ± std over seeds {list(seeds)}."
    )


def results_record(outcome: StudyOutcome, comparison: ArmComparison, cost: pd.DataFrame) -> dict:
    """The JSON-ready results of a run (for :func:`kdcourse.course.results.save_results`): summary,
    configuration, headline, grid and cost tables, the paired effects (points), every run's row and
    the training time. ``cost`` is a :func:`kdcourse.studies.mnist_distillation_costs.cost_frame`;
    ``comparison`` and ``cost`` must describe ``outcome``'s own runs and models."""
    headline = tables.readable(comparison.headline, HEADLINE_HEADERS, scale=100).frame
    gain = comparison.gain
    return {
        "summary": results_summary(comparison, outcome.config.seeds),
        "config": json_ready(dict(vars(outcome.config))),
        "tables": {
            "Headline (test accuracy %, mean ± std over seeds)": json_ready(headline.to_dict(orient="records")),
            "T × α grid (test accuracy, fraction)": json_records(grid_table(outcome.runs, "test_accuracy"), 6),
            COST_TABLE: json_records(cost, 6),
        },
        "kd_gain_points": json_ready({**gain.as_dict(), "seeds": gain.n}),
        "effects": json_ready({name: effect.as_dict() for name, effect in comparison.gains.items()}),
        "runs": json_ready(outcome.runs.to_dict(orient="records")),
        "train_seconds": round(outcome.train_seconds, 1),
    }


