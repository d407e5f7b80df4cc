"""The TL+KD study's tables: scores per arm, TL+KD − TL effects, true positives per class, epochs to
reach a validation accuracy, and the robustness sweeps; accuracies are fractions, differences points."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdcourse.stats import paired_effect

__all__ = ["METRICS", "metrics_of", "kd_arms", "arm_scores", "effects_table", "true_positive_change", "epochs_to_reach",
           "speed_table", "sweep_table"]

METRICS = ("accuracy", "precision", "recall", "f1", "auc")  # test scores a run records (AUC: two classes only)


def _series(frame: pd.DataFrame, column: str, **where: object) -> pd.Series:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows.set_index("seed")[column]


def metrics_of(runs: pd.DataFrame) -> tuple[str, ...]:
    """The :data:`METRICS` that every run of ``runs`` recorded (AUC only where the data have two classes)."""
    return tuple(m for m in METRICS if m in runs.columns and runs[m].notna().all())


def kd_arms(frame: pd.DataFrame, regime: str) -> list[str]:
    """The TL+KD arms (``tlkd_thesis``, ``tlkd_chosen``) that ``frame`` holds for ``regime``."""
    present = set(frame.loc[frame["regime"] == regime, "arm"])
    return [arm for arm in ("tlkd_thesis", "tlkd_chosen") if arm in present]


def arm_scores(runs: pd.DataFrame, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Mean and std over seeds of ``columns`` (default: :func:`metrics_of`) per (regime, arm), as fractions."""
    stats = runs.groupby(["regime", "arm"], sort=False)[list(columns or metrics_of(runs))].agg(["mean", "std"])
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return stats


def effects_table(runs: pd.DataFrame, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """TL+KD − TL per regime, KD arm present and metric (default: :func:`metrics_of`), in points (AUC × 100),
    paired over seeds (:func:`kdcourse.stats.paired_effect`)."""
    rows = []
    for regime in dict.fromkeys(runs["regime"]):
        for arm in kd_arms(runs, regime):
            for column in columns or metrics_of(runs):
                effect = paired_effect(_series(runs, column, regime=regime, arm=arm), _series(runs, column, regime=regime, arm="tl"))
                rows.append({"regime": regime, "arm": arm, "metric": column, **effect.as_dict()})
    return pd.DataFrame(rows)


def true_positive_change(confusion: dict, regime: str, arm: str, classes: tuple[str, ...]) -> pd.DataFrame:
    """Per class: true positives of ``arm`` minus those of TL on the test set, mean and std over seeds
    (the thesis's Table 6.2), and the class's test count."""
    seeds = sorted(confusion[regime]["tl"], key=int)
    diffs = np.array([np.diag(np.array(confusion[regime][arm][s])) - np.diag(np.array(confusion[regime]["tl"][s])) for s in seeds])
    counts = np.array(confusion[regime]["tl"][seeds[0]]).sum(1)
    return pd.DataFrame({"class": list(classes), "test images": counts, "change mean": diffs.mean(0),
                         "change std": diffs.std(0, ddof=1) if len(seeds) > 1 else np.nan})


def epochs_to_reach(history: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per (regime, arm, seed) the first epoch whose validation accuracy reaches ``threshold`` (NaN: never)."""
    reached = history[history.val_accuracy >= threshold].groupby(["regime", "arm", "seed"])["epoch"].min()
    every = history.groupby(["regime", "arm", "seed"])["epoch"].max().rename("epochs")
    return pd.concat([reached.rename("epoch"), every], axis=1).reset_index()


def speed_table(history: pd.DataFrame, thresholds: tuple[float, ...]) -> pd.DataFrame:
    """Per regime, KD arm present and threshold: epochs to reach it (mean ± std over the seeds where both arms did),
    how many seeds reached it per arm, and TL+KD − TL in epochs, paired over those seeds."""
    rows = []
    for threshold in thresholds:
        reach = epochs_to_reach(history, threshold)
        for regime in dict.fromkeys(history["regime"]):
            tl = _series(reach, "epoch", regime=regime, arm="tl")
            for arm in kd_arms(history, regime):
                kd = _series(reach, "epoch", regime=regime, arm=arm)
                both = pd.concat({"kd": kd, "tl": tl}, axis=1).dropna()
                row = {"regime": regime, "arm": arm, "threshold": threshold, "seeds reached (TL)": int(tl.notna().sum()),
                       "seeds reached (TL+KD)": int(kd.notna().sum()),
                       "TL epochs mean": both["tl"].mean(), "TL+KD epochs mean": both["kd"].mean()}
                if len(both) > 1:
                    row |= paired_effect(both["kd"], both["tl"], scale=1.0, unit="epochs").as_dict()
                rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(sweeps: pd.DataFrame, column: str = "accuracy") -> pd.DataFrame:
    """Per (sweep, level, KD arm): TL and TL+KD test ``column`` (mean, std over seeds) and their paired
    difference in points with its verdict; with the level teacher's test accuracy (``teacher accuracy``, over
    seeds) where the record has it."""
    rows = []
    for (sweep, level), group in sweeps.groupby(["sweep", "level"], sort=False):
        tl = _series(group, column, arm="tl")
        for arm in [a for a in dict.fromkeys(group["arm"]) if a != "tl"]:
            kd = _series(group, column, arm=arm)
            row = {"sweep": sweep, "level": level, "arm": arm, "TL mean": tl.mean(), "TL std": tl.std(),
                   "TL+KD mean": kd.mean(), "TL+KD std": kd.std()}
            if "teacher_accuracy" in group:
                row["teacher accuracy"] = group[group.arm == "tl"].teacher_accuracy.mean()
            if len(tl) > 1:
                row |= paired_effect(kd, tl).as_dict()
            rows.append(row)
    return pd.DataFrame(rows)
