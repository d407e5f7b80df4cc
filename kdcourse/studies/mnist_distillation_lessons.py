"""What the MNIST distillation chapter learned: its closing list, from the analyses of
:mod:`kdcourse.studies.mnist_distillation_findings` (differences in percentage points, paired by seed)."""

from __future__ import annotations

import pandas as pd

from kdcourse import stats
from kdcourse.studies.mnist_distillation import grid_table
from kdcourse.studies.mnist_distillation_findings import ArmComparison, Plateau, TemperatureCurve

__all__ = ["lessons_text"]

_CLOSINGS = {
    stats.VERDICTS[0]: ("Because the comparison is paired, the seed noise that both arms share cancels, which is what "
                        "lets a difference of this size be measured at all."),
    stats.VERDICTS[1]: "More seeds would tell whether it is an effect.",
    stats.VERDICTS[2]: "With these seeds it cannot be told apart from the seed noise.",
}


def _gain_lesson(comparison: ArmComparison, recorded: bool) -> str:
    (t, a), gain = comparison.head, comparison.gain
    better = "better" if gain.mean > 0 else "worse"
    lead = {
        stats.VERDICTS[0]: f"Distillation from a CNN makes the MLP student {better} than the same network trained "
                           "on labels alone.",
        stats.VERDICTS[1]: (f"Distillation from a CNN may make the MLP student {better} than the same network "
                            "trained on labels alone: the seeds suggest it, but do not establish it."),
        stats.VERDICTS[2]: ("Distillation from a CNN did not measurably change the MLP student's accuracy against "
                            "the same network trained on labels alone."),
    }[gain.verdict]
    where = "recorded full run (appendix)" if recorded else "run above"
    wins, seeds = comparison.wins(), len(comparison.per_seed())
    return (
        f"""* {lead} In the {where}
  the KD student at $T = {t:g}$, $\\alpha = {a:g}$ beat its scratch twin on {wins} of {seeds}
  seeds; the difference is {gain.describe()}. {_CLOSINGS[gain.verdict]}"""
    )


def _grid_lesson(comparison: ArmComparison, found: Plateau, curve: TemperatureCurve) -> str:
    (t, a), (t_best, a_best), best_over_head = comparison.head, comparison.selected, comparison.best_over_head
    (low_t, low), (second_t, second) = curve.low, curve.second
    best_test = tuple(grid_table(comparison.runs, "test_accuracy")["mean"].idxmax())
    test_sentence = (
        f"the best *test* cell is a different one ($T = {best_test[0]:g}$, $\\alpha = {best_test[1]:g}$), which is "
        "exactly why we select on validation" if best_test != tuple(comparison.selected)
        else "here it is also the best *test* cell, which a single run could not have told us"
    )
    judged = ("It is one point of that plateau, not a discovery" if found.flat and not best_over_head.clears_noise
              else "The setting chosen on validation is worth choosing")
    lead = "Temperature matters most at the low end" if curve.rising else "Along the temperature axis"
    shape, others = "a plateau" if found.flat else "not flat", len(found.effects)
    return (
        f"""* {lead}: at $T = {low_t:g}$ the
  difference from scratch is {low.short()} ({low.verdict}), at $T = {second_t:g}$ it is
  {second.short()} ({second.verdict}), and from
  $T = {t:g}$ on the grid is {shape}: of the {others} other settings there, compared seed by seed with
  $T = {t:g}$, $\\alpha = {a:g}$, {found.verdict_counts()}, and no
  difference exceeds {found.largest:.2f} points. The best setting on validation
  ($T = {t_best:g}$, $\\alpha = {a_best:g}$) differs from it by {best_over_head.describe()}.
  {judged}; {test_sentence}."""
    )


def _cost_lesson(cost: pd.DataFrame) -> str:
    teacher, student = cost.loc["teacher (CNN)"], cost.loc["student (MLP)"]
    return (
        f"""* The student is cheaper to run than the teacher in operations ({teacher.macs / student.macs:.0f} times
  fewer MACs), not in parameters ({100 * (student.parameters / teacher.parameters - 1):.0f} % more):
  "smaller" must say which cost it means."""
    )


def lessons_text(
    comparison: ArmComparison, found: Plateau, curve: TemperatureCurve, cost: pd.DataFrame, recorded: bool
) -> str:
    """The chapter's conclusions as a Markdown list: the KD gain, the grid, the costs (``cost``: a
    :func:`kdcourse.studies.mnist_distillation_costs.cost_frame`; ``recorded``: whether they come from
    the recorded full run rather than the run above)."""
    return "\n".join([_gain_lesson(comparison, recorded), _grid_lesson(comparison, found, curve), _cost_lesson(cost)])
