"""What the MHIST chapter records of its live run: everything a smoke build of the chapter renders from
the recorded full run (the resolution comparison, the head diagnosis, every arm's rows, test scores and
validation curves, both grids, the chosen single teacher and (T, α) per teacher, the networks' costs)."""

from __future__ import annotations

import pandas as pd

from kdcourse.studies import mhist
from kdcourse.studies.common import json_ready, json_records

__all__ = ["result_record"]


def _headline(outcome: mhist.MhistOutcome, summary: pd.DataFrame) -> str:
    """One line: every arm's test AUC, mean ± std over seeds."""
    line = "; ".join(f"{mhist.arm_label(arm)} {row['test_auc mean']:.3f} ± {row['test_auc std']:.3f}"
                     for arm, row in summary.iterrows())
    return f"{line} (test AUC, mean ± std over seeds {list(outcome.config.seeds)})"


def result_record(outcome: mhist.MhistOutcome, source: str, costs: pd.DataFrame, sizes: pd.DataFrame,
                  diagnosis: pd.DataFrame) -> dict:
    """What the chapter saves of its live run (never the recorded findings): ``outcome`` of
    :func:`kdcourse.studies.mhist.run_study`, the data ``source``, the networks' ``costs``, the ``sizes``
    rows of :func:`kdcourse.studies.mhist.compare_sizes` and the ``diagnosis`` rows of
    :func:`kdcourse.studies.mhist.head_diagnosis`."""
    summary = mhist.arm_summary(outcome.runs)
    comparison = mhist.effect_table(outcome.runs, outcome.scores, outcome.labels)
    return {
        "summary": _headline(outcome, summary),
        "config": json_ready(vars(outcome.config)),
        "data": source, "weights": outcome.weights, "data_counts": outcome.data_counts,
        "tables": {"Test AUC per arm (mean and std over seeds)": json_records(summary.round(4)),
                   "Differences in test AUC (points)": json_records(comparison.round(3)),
                   "Networks": json_records(costs.round(3))},
        "sizes": json_records(sizes), "head_diagnosis": json_records(diagnosis), "costs": json_records(costs),
        "runs": json_records(outcome.runs), "grid": json_records(outcome.grid), "chosen": outcome.chosen,
        "teacher_network": outcome.teacher_network,
        "scores": {arm: {str(seed): values for seed, values in by_seed.items()}
                   for arm, by_seed in outcome.scores.items()},
        "labels": outcome.labels, "history": outcome.history, "cache_seconds": round(outcome.cache_seconds, 1),
    }
