"""What the TL+KD chapter shows: its tables, sentences and records, drawn from a run's record (the
live run, or the recorded full-profile one in a smoke build). Accuracies are fractions in records,
% in tables and sentences; differences between arms are percentage points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from kdcourse import stats
from kdcourse.course import tables
from kdcourse.stats import Effect
from kdcourse.studies.common import json_records
from kdcourse.studies.tlkd.config import ARM_LABELS, PAIRS, TlkdConfig
from kdcourse.studies.tlkd.foreground import (
    FOREGROUND_COMPARISONS,
    ForegroundOutcome,
    foreground_effects,
)
from kdcourse.studies.tlkd.runner import TlkdOutcome, outcome_record
from kdcourse.studies.tlkd.tables import (
    arm_scores,
    effects_table,
    speed_table,
    sweep_table,
    true_positive_change,
)

__all__ = [
    "REGIME_WORDS", "METRIC_HEADERS", "SWEEP_WORDS", "config_table", "scored_images", "cost_tables", "cost_text",
    "mhist_overview", "labelled", "effect_cells", "score_tables", "true_positive_tables", "speed_shown",
    "sweep_shown", "share_table", "share_effects", "mnist_record", "summary_text", "lessons_text", "mnist_lessons_text",
    "GENERATED_NOTE", "full_record",
]

REGIME_WORDS = {"thesis": "thesis regime (frozen backbone)", "finetune": "fine-tuning regime"}
METRIC_HEADERS = {"accuracy": "accuracy (%)", "precision": "macro precision (%)", "recall": "macro recall (%)",
                  "f1": "macro F1 (%)"}
SWEEP_WORDS = {"fraction": "training fraction", "label_noise": "label-noise rate", "center_black": "CenterBlack fraction",
               "quarter_black": "QuarterBlack fraction"}

GENERATED_NOTE = ("SMOKE RUN ON GENERATED IMAGES WITH RANDOM WEIGHTS: this run uses a small generated set in CIFAR-10's file "
                  "format (coloured squares on noise, not photographs) and two small networks with random weights.")


def _values(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def config_table(config: TlkdConfig, title: str) -> tables.Table:
    """The settings of ``config`` as a two-column table."""
    pair = PAIRS[config.pair]
    rows = [("data set", pair.dataset), ("teacher", f"{pair.teacher} ({pair.teacher_recipe.replace('_', '-')})"),
            ("student", pair.student), ("image side (px)", config.size), ("seeds", ", ".join(map(str, config.seeds))),
            ("thesis regime", f"SGD lr {config.sgd_lr:g}, momentum {config.momentum:g}, weight decay {config.weight_decay:g}, "
                              f"batch {config.batch_size}, plateau patience {config.plateau_patience}, "
                              f"early stopping after {config.early_stopping_patience}, at most {config.max_epochs} epochs"),
            ("fine-tuning regime", f"head {config.head_epochs} epochs at {config.head_lr:g}, then the last stage "
                                   f"{config.finetune_epochs} epochs at {config.finetune_lr:g} (AdamW, cosine)"),
            ("TL+KD", f"thesis T = {config.thesis_kd[0]:g}, α = {config.thesis_kd[1]:g}; grid T ∈ "
                      f"{{{_values(config.temperatures)}}} × α ∈ {{{_values(config.alphas)}}}"),
            ("sweeps (thesis regime)", "; ".join(f"{s.replace('_', ' ')} {_values(levels)}" for s, levels in config.sweeps))]
    return tables.readable(pd.DataFrame(rows, columns=["setting", "value"]), caption=title)


def scored_images(masks: np.ndarray, count: int) -> tuple[np.ndarray, str]:
    """The first ``count`` images whose mask ``(N, H, W)`` found an object (neither empty nor full), and a
    sentence that says how many did."""
    area = masks.reshape(len(masks), -1).mean(1)
    found = (area > 0) & (area < 1)
    scored = np.flatnonzero(found)[:count]
    return scored, (f"GrabCut found an object in {int(found.sum())} of the first {len(masks)} test images; "
                    f"the first {len(scored)} of them are scored")


def cost_tables(cost: Mapping[str, Any]) -> tuple[tables.Table, tables.Table]:
    """The measured throughput and the estimated time per stage of a cost record
    (:func:`kdcourse.studies.tlkd.costs.cost_record`)."""
    estimate = pd.DataFrame(cost["table"])
    rates = pd.DataFrame([{"pass": k, "images per second": v} for k, v in cost["rates"].items()])
    return (tables.readable(rates, digits=1, caption=f"Measured throughput at 224 px ({cost['device']})"),
            tables.readable(estimate.assign(hours=estimate.seconds / 3600).drop(columns="seconds"), digits=1,
                            caption="The CIFAR-10 profile, by stage: images through each network and the time at the "
                                    "rates above"))


def cost_text(cost: Mapping[str, Any]) -> str:
    """What the CIFAR-10 profile costs in hours, its largest stages, and the thesis's recipe without caches."""
    estimate = pd.DataFrame(cost["table"])
    cached = estimate[~estimate.stage.str.startswith("thesis recipe")]
    uncached = estimate[estimate.stage.str.startswith("thesis recipe")]
    on_gpu = "GPU" in cost["device"] or "NVIDIA" in cost["device"]
    return (
        f"At the rates measured on {cost['device']}, the CIFAR-10 profile needs about {cached.seconds.sum() / 3600:.0f} hours "
        f"of computation; the largest stages are "
        + " and ".join(f"{stage} ({seconds / cached.seconds.sum():.0%})"
                       for stage, seconds in cached.groupby("stage").seconds.sum().nlargest(2).items()) + ". "
        f"The thesis's recipe run as written, with the teacher and the whole student evaluated in every epoch, would need "
        f"{uncached.seconds.sum() / 3600:.0f} hours for the thesis regime's two arms alone. "
        + ("" if on_gpu else "These are CPU rates: no GPU was available when they were measured. On a GPU, divide the "
           "images per stage in the table, which do not depend on the machine, by the rates measured there.")
    )


def mhist_overview(found: Mapping[str, Any]) -> str:
    """The split sizes, networks, teacher scores and chosen (T, α) of an MHIST record, one line each."""
    teachers, counts = pd.DataFrame(found["teachers"]), found["data_counts"]
    lines = [f"{counts['train']} training, {counts['val']} validation and {counts['test']} test images; "
             f"teacher {found['weights']['teacher']}, student {found['weights']['student']}; "
             f"teacher test accuracy {tables.mean_std_text(100 * teachers.accuracy.mean(), 100 * teachers.accuracy.std(), 1)} %, "
             f"AUC {tables.mean_std_text(teachers.auc.mean(), teachers.auc.std(), 3)}"]
    lines += [f"{regime} regime: (T, α) chosen on validation accuracy: T = {chosen['temperature']:g}, α = {chosen['alpha']:g}"
              for regime, chosen in found["chosen"].items()]
    return "\n".join(lines)


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its regimes and arms in words."""
    out = frame.reset_index() if "regime" not in frame.columns else frame.copy()
    out["regime"] = out["regime"].map(REGIME_WORDS)
    if "arm" in out.columns:
        out["arm"] = out["arm"].map(ARM_LABELS).fillna(out["arm"])
    return out


def effect_cells(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """An effect table (rows of Effect.as_dict) as ``what`` (mean ± std), 95 % interval and verdict, last."""
    out = frame.drop(columns=[c for c in ("n", "low80", "high80", "unit", "method", "over", "p_value") if c in frame.columns])
    present = out["mean"].notna()
    out[what] = [tables.mean_std_text(m, s) if ok else "—" for m, s, ok in zip(frame["mean"], frame["std"], present)]
    out["95 % interval"] = [f"{lo:+.2f} to {hi:+.2f}" if ok else "—"
                            for lo, hi, ok in zip(frame["low"], frame["high"], present)]
    out = out.drop(columns=["mean", "std", "low", "high"])
    return out[[c for c in out.columns if c != "verdict"] + ["verdict"]]


def score_tables(runs: pd.DataFrame) -> tuple[tables.Table, tables.Table]:
    """Test scores per regime and arm, and TL+KD − TL paired over seeds (hypothesis 1)."""
    scores = tables.readable(labelled(arm_scores(runs)), METRIC_HEADERS, scale=100, digits=1,
                             caption="MHIST test scores, mean ± std over seeds")
    effects = tables.readable(labelled(effect_cells(effects_table(runs), "TL+KD − TL (points)")), {"metric": "metric"},
                              caption="TL+KD minus TL, paired over seeds")
    return scores, effects


def true_positive_tables(found: Mapping[str, Any]) -> list[tables.Table]:
    """Per regime and KD arm: correct test images per class, TL+KD − TL (the thesis's Table 6.2)."""
    confusion, classes = found["confusion"], found["classes"]
    return [tables.readable(true_positive_change(confusion, regime, arm, classes), digits=1,
                            caption=f"Correct test images per class, {ARM_LABELS[arm]} − TL only, {REGIME_WORDS[regime]}")
            for regime in confusion for arm in ("tlkd_thesis", "tlkd_chosen")]


def speed_shown(history: pd.DataFrame, thresholds: tuple[float, ...]) -> tuple[pd.DataFrame, tables.Table]:
    """:func:`~kdcourse.studies.tlkd.tables.speed_table` (every effect column present) and its table."""
    speed = speed_table(history, thresholds)
    for column in ("mean", "std", "low", "high", "verdict"):
        speed[column] = speed.get(column, np.nan)
    shown = effect_cells(speed, "TL+KD − TL (epochs)")
    shown["threshold"] = [f"{100 * t:g} %" for t in shown["threshold"]]
    return speed, tables.readable(labelled(shown), digits=1, caption="Epochs to reach a validation accuracy "
                                                                       "(means over the seeds where both arms did)")


def sweep_shown(sweeps: pd.DataFrame) -> tuple[pd.DataFrame, tables.Table]:
    """:func:`~kdcourse.studies.tlkd.tables.sweep_table` and its table, accuracies in %."""
    h4 = sweep_table(sweeps)
    shown = effect_cells(h4, "TL+KD − TL (points)")
    for column in ("TL mean", "TL std", "TL+KD mean", "TL+KD std"):
        shown[column] = 100 * shown[column]
    shown = shown[[c for c in shown.columns if c != "verdict"] + ["verdict"]]
    shown["sweep"] = shown["sweep"].map(SWEEP_WORDS)
    shown["arm"] = shown["arm"].map(ARM_LABELS)
    return h4, tables.readable(shown, {"TL": "TL accuracy (%)", "TL+KD": "TL+KD accuracy (%)"}, scale=1, digits=1,
                               caption="Test accuracy under each sweep level, TL+KD minus TL paired over seeds")


def share_table(shares: pd.DataFrame, what: str) -> tables.Table:
    """Foreground share and stroke area per model, mean ± std over images and seeds."""
    summary = shares.groupby("model", sort=False)[["share", "stroke"]].agg(["mean", "std"])
    summary.columns = [f"{c} {s}" for c, s in summary.columns]
    headers = {"share": "positive SHAP mass on strokes (%)", "stroke": "strokes' share of the image (%)"}
    seeds = ", ".join(map(str, sorted(shares.seed.unique())))
    return tables.readable(summary, headers, scale=100, digits=1, caption=f"{what}: {shares.image.nunique()} test "
                           f"images × seeds {seeds}, mean ± std over images and seeds")


def share_effects(shares: pd.DataFrame, comparisons: tuple[tuple[str, str], ...] = FOREGROUND_COMPARISONS,
                  ) -> tuple[pd.DataFrame, tables.Table]:
    """:func:`~kdcourse.studies.tlkd.foreground.foreground_effects` of ``comparisons`` and its table (points)."""
    effects = foreground_effects(shares, comparisons)
    caption = ("Differences in foreground share (points): over seeds (per-seed means) and over images"
               if comparisons == FOREGROUND_COMPARISONS else
               "TL+KD − TL: foreground share of positive SHAP mass (points), over seeds and over images")
    return effects, tables.readable(effects, scale=1, digits=2, caption=caption)


def mnist_record(foreground: ForegroundOutcome, seeds: tuple[int, ...], samples: int) -> dict:
    """The JSON-ready record of an MNIST foreground run."""
    return {"shares": json_records(foreground.shares), "images": foreground.images,
            "seconds": round(foreground.seconds, 1), "seeds": list(seeds), "samples": samples}


def summary_text(mhist: Mapping[str, Any] | None, cifar_run: bool) -> str:
    """The one-line summary of a full-profile result file."""
    if not mhist:
        return ("CIFAR-10 not run; " if not cifar_run else "") + "MHIST not run"
    means = pd.DataFrame(mhist["runs"]).groupby(["regime", "arm"], sort=False).accuracy.mean().reset_index()
    return (("CIFAR-10 not run; " if not cifar_run else "") + "MHIST: "
            + "; ".join(f"{row.regime} {row.arm} {row.accuracy:.4f}" for row in means.itertuples())
            + " (test accuracy, mean over seeds)")


def full_record(mhist: dict | None, mnist: dict | None, cifar: TlkdOutcome | None, cifar_shares: pd.DataFrame | None,
                cost: dict | None) -> dict:
    """The findings a full-profile run writes: each part's record (``"not run"`` for a part that did not
    run), the cost record and the one-line summary."""
    cifar_record: dict | str = "not run"
    if cifar is not None:
        cifar_record = outcome_record(cifar) | {"foreground": json_records(cifar_shares)}
    return {"mhist": mhist if mhist is not None else "not run", "mnist_foreground": mnist if mnist is not None else "not run",
            "cifar10": cifar_record, "cost": cost, "summary": summary_text(mhist, cifar is not None)}


def _effect_of(frame: pd.DataFrame, **where: object) -> Effect:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return Effect.from_dict(rows.iloc[0].to_dict())


def lessons_text(found: Mapping[str, Any], speed: pd.DataFrame, h4: pd.DataFrame) -> str:
    """What the MHIST record says about hypotheses 1, 3 and 4, one bullet each (per regime for 1)."""
    runs, sweeps, h1 = pd.DataFrame(found["runs"]), pd.DataFrame(found["sweeps"]), effects_table(pd.DataFrame(found["runs"]))
    lines = []
    for regime in dict.fromkeys(runs.regime):
        thesis_kd, chosen_kd = (_effect_of(h1, regime=regime, arm=arm, metric="accuracy")
                                for arm in ("tlkd_thesis", "tlkd_chosen"))
        f1 = _effect_of(h1, regime=regime, arm="tlkd_chosen", metric="f1")
        tl = runs[(runs.regime == regime) & (runs.arm == "tl")].accuracy
        chosen = found["chosen"][regime]
        same = (chosen["temperature"], chosen["alpha"]) == tuple(found["config"]["thesis_kd"])
        lines.append(
            f"* MHIST, {REGIME_WORDS[regime]}: TL alone reaches {tables.mean_std_text(100 * tl.mean(), 100 * tl.std(), 1)} % "
            f"test accuracy; TL+KD at the thesis's T = 10, α = 0.1 changes it by {thesis_kd.describe()}"
            + (" (validation chose the same setting)" if same else
               f", and at the T = {chosen['temperature']:g}, α = {chosen['alpha']:g} chosen on validation by "
               f"{chosen_kd.describe()}")
            + f". Macro F1 of the chosen setting: {f1.short()} ({f1.verdict}).")
    cleared = h4[h4.verdict == "clears the noise"]
    settings = "the thesis's (T, α), which validation also chose" if sweeps.arm.nunique() == 2 else "both KD settings"
    lines.append(f"* Of the {len(h4)} sweep comparisons (every level, {settings}), {len(cleared)} "
                 f"{'clears' if len(cleared) == 1 else 'clear'} the noise"
                 + (": " + "; ".join(f"{SWEEP_WORDS[r.sweep]} {r.level:g}, {ARM_LABELS[r.arm]}: {stats.signed(r.mean)} points"
                                     for r in cleared.itertuples()) if len(cleared) else "")
                 + f". With {len(h4)} comparisons judged at the 95 % level, about {len(h4) / 20:.1f} would clear the noise "
                 "by chance alone even if distillation changed nothing, so a lone cleared level is weak evidence.")
    faster = speed[speed.verdict == "clears the noise"] if "verdict" in speed.columns else speed.iloc[:0]
    lines.append(f"* Epochs to a validation threshold: {len(faster)} of {len(speed)} comparisons clear the noise.")
    return "\n".join(lines)


def _direction(row: pd.Series, model: str, baseline: str) -> str:
    """One sentence from a row of ``foreground_effects``, decided by both of its verdicts."""
    both = row["seeds verdict"] == row["images verdict"] == "clears the noise"
    if not both:
        return f"By the seeds or by the images, {model} and {baseline} cannot be told apart on this measure."
    more = "more" if row["images mean"] > 0 else "less"
    return f"{model[0].upper() + model[1:]} puts {more} of its attribution on the strokes than {baseline}."


def mnist_lessons_text(shares: pd.DataFrame, effects: pd.DataFrame) -> str:
    """What the MNIST foreground shares and their effects (:func:`foreground_effects`) say."""
    by_pair = effects.set_index(["model", "baseline"])
    kd_scratch = by_pair.loc[("kd", "scratch")]
    means = shares.groupby("model").share.mean()
    return (
        f"* MNIST: the teacher puts {100 * means['teacher']:.1f} % of its positive SHAP mass on the strokes, the KD student "
        f"{100 * means['kd']:.1f} % and the scratch student {100 * means['scratch']:.1f} % (the strokes cover "
        f"{100 * shares.stroke.mean():.1f} % of the image). KD − scratch: {stats.signed(kd_scratch['seeds mean'])} points "
        f"over seeds ({kd_scratch['seeds verdict']}), {stats.signed(kd_scratch['images mean'])} points over images "
        f"({kd_scratch['images verdict']}). " + _direction(kd_scratch, "the KD student", "the scratch student")
        + " " + _direction(by_pair.loc[("teacher", "kd")], "the CNN teacher", "the KD student")
    )
