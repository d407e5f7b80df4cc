"""What the TL+KD chapter shows: its tables, sentences and records, drawn from a run's record (the
live run, or the recorded full-profile one in a smoke build). Accuracies are fractions in records,
% in tables and sentences; differences between arms are percentage points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from kdcourse import provenance, stats
from kdcourse.course import tables
from kdcourse.course.findings import in_words
from kdcourse.stats import Effect
from kdcourse.studies.common import json_records
from kdcourse.studies.tlkd.config import ARM_LABELS, PAIRS, TlkdConfig
from kdcourse.train import PLATEAU_FACTOR
from kdcourse.studies.tlkd.foreground import (
    FOREGROUND_COMPARISONS,
    ForegroundOutcome,
    PhotoForeground,
    foreground_effects,
)
from kdcourse.studies.tlkd.runner import TlkdOutcome, outcome_record
from kdcourse.studies.tlkd.tables import (
    arm_scores,
    effects_table,
    kd_arms,
    speed_table,
    sweep_table,
    true_positive_change,
)

__all__ = [
    "REGIME_WORDS", "METRIC_HEADERS", "METRIC_WORDS", "SWEEP_WORDS", "TEACHER_RECIPES", "THESIS_SCHEDULE", "config_table",
    "departures_text", "TRAINING_STAGES", "cost_tables", "cost_text", "repeats_thesis", "without_repeated_arm",
    "recorded_teacher", "teacher_note", "dataset_name", "data_source", "overview", "labelled", "effect_cells", "score_tables", "true_positive_tables", "speed_shown",
    "sweep_shown", "share_table", "share_effects", "mnist_record", "summary_text", "lessons_text", "mnist_lessons_text",
    "label_noise_text", "verdict_counts", "verdicts_text", "full_record", "cifar_record",
    "PHOTO_COMPARISONS", "teacher_gaps", "gap_text", "stage_table", "sizes_table", "photo_lessons_text",
    "thesis_comparison_text", "THESIS_CIFAR", "rates_table", "PARTS", "carried_note", "generated_note",
    "AIRBENCH_PAPER", "teacher_text",
]

REGIME_WORDS = {"thesis": "thesis regime (frozen backbone)", "finetune": "fine-tuning regime"}
DATASET_WORDS = {"mhist": "MHIST", "cifar10": "CIFAR-10"}
METRIC_HEADERS = {"accuracy": "accuracy (%)", "precision": "macro precision (%)", "recall": "macro recall (%)",
                  "f1": "macro F1 (%)", "auc": "AUC (%)"}
METRIC_WORDS = {"accuracy": "accuracy", "precision": "macro precision", "recall": "macro recall", "f1": "macro F1",
                "auc": "AUC"}
SWEEP_WORDS = {"fraction": "training fraction", "label_noise": "label-noise rate", "center_black": "CenterBlack fraction",
               "quarter_black": "QuarterBlack fraction"}

TEACHER_RECIPES = {"two_phase": "a new head on the frozen network, then its last stage, with the settings of the "
                                 "fine-tuning regime below (the MHIST chapter's recipe)",
                   "ensemble": "the MHIST chapter's ensemble: each member trained with a new head on the frozen "
                               "network, then its last stage (settings of the fine-tuning regime below), their "
                               "logits averaged",
                   "fine_tune": "fine-tuned whole like the students of the fine-tuning regime: a new head, then every "
                                "layer",
                   "airbench": "trained from scratch on the 32-px images with the airbench94 recipe (kdcourse.cifar_teacher), "
                               "epoch chosen on validation"}
# the thesis's schedule for its students and teacher (its Section 5.3.1)
THESIS_SCHEDULE = {"max_epochs": 200, "early_stopping_patience": 10, "plateau_patience": 3, "dropout": 0.2}

def generated_note(config: TlkdConfig) -> str:
    """What a smoke run on generated images is made of."""
    teacher = (f"a teacher trained on those images for {in_words(config.teacher_epochs)} epochs"
               if not PAIRS[config.pair].pretrained_teacher else "a teacher with random weights")
    return ("SMOKE RUN ON GENERATED IMAGES WITH RANDOM WEIGHTS: this run uses a small generated set in CIFAR-10's file "
            f"format (coloured squares on noise, not photographs), a student with random weights and {teacher}.")
# the thesis's CIFAR-10 results: ResNet-18 test accuracy (%), mean ± std over seeds 0, 7 and 42
THESIS_CIFAR = {"tl": (93.46, 0.91), "tlkd": (97.02, 1.24)}


def _values(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def config_table(config: TlkdConfig, title: str) -> tables.Table:
    """The settings of ``config`` as a two-column table."""
    pair = PAIRS[config.pair]
    rows = [("data set", pair.dataset), ("teacher", " + ".join(pair.teacher_networks())), ("teacher's training", TEACHER_RECIPES[pair.teacher_recipe]),
            ("student", pair.student), ("image side (px)", config.size), ("seeds", ", ".join(map(str, config.seeds))),
            ("thesis regime", f"SGD lr {config.sgd_lr:g}, momentum {config.momentum:g}, weight decay {config.weight_decay:g}, "
                              f"batch {config.batch_size}, plateau patience {config.plateau_patience}, "
                              f"early stopping after {config.early_stopping_patience}, at most {config.max_epochs} epochs, "
                              "no dropout"),
            ("fine-tuning regime", f"head {config.head_epochs} epochs at {config.head_lr:g}, then every layer "
                                   f"{config.finetune_epochs} epochs at {config.finetune_lr:g} (AdamW, cosine; pretrained "
                                   "BatchNorm statistics frozen)"),
            ("TL+KD", f"thesis T = {config.thesis_kd[0]:g}, α = {config.thesis_kd[1]:g}; grid T ∈ "
                      f"{{{_values(config.temperatures)}}} × α ∈ {{{_values(config.alphas)}}}, searched in the "
                      f"{' and '.join(REGIME_WORDS[r] for r in config.regimes if r in config.grid_regimes)}"),
            ("sweeps (thesis regime)", "; ".join(f"{s.replace('_', ' ')} {_values(levels)}" for s, levels in config.sweeps)),
            ("sweep teacher", _sweep_teacher(config))]
    if not pair.pretrained_teacher:
        rows.insert(3, ("teacher's epochs", f"{config.teacher_epochs}, batches of {config.teacher_batch_size}, at 32 px"))
    return tables.readable(pd.DataFrame(rows, columns=["setting", "value"]), caption=title)


def _sweep_teacher(config: TlkdConfig) -> str:
    """Which teacher each sweep distils from, in words."""
    retrained = [{"fraction": "fewer images", "label_noise": "noisy labels"}[s] for s in config.retrained_sweeps
                 if s in dict(config.sweeps)]
    if not retrained:
        return "the seed's teacher, fixed (it sees the same occluded images as the student)"
    return (f"trained again on the sweep's own training set for {' and '.join(retrained)}; the seed's teacher, fixed, "
            "for the occlusions (it sees the same occluded images)")


def departures_text(config: TlkdConfig) -> str:
    """How the thesis regime of ``config`` departs from the thesis's schedule (:data:`THESIS_SCHEDULE`), and why."""
    thesis = THESIS_SCHEDULE
    return (f"The thesis regime keeps the thesis's optimiser, rates and batch size but not its schedule: at most "
            f"{config.max_epochs} epochs instead of {thesis['max_epochs']}, early stopping after "
            f"{config.early_stopping_patience} epochs without progress instead of {thesis['early_stopping_patience']}, "
            f"the rate cut after {config.plateau_patience} stalled epochs instead of {thesis['plateau_patience']}, and no "
            f"dropout instead of a dropout of {thesis['dropout']:g}. The reason is the budget of a CPU: every network of "
            f"the study is trained for {in_words(len(config.seeds))} seeds, and the validation curves of these heads "
            "flatten well before the cap (the overviews of the runs below say when each run stopped). The thesis says its "
            f"rate was \"reduced by 10 %\" on a plateau; we read that as the usual tenfold cut (× {PLATEAU_FACTOR:g}).")


def cost_tables(cost: Mapping[str, Any]) -> tuple[tables.Table, tables.Table]:
    """The measured throughput and the estimated time per stage of a cost record
    (:func:`kdcourse.studies.tlkd.costs.cost_record`)."""
    estimate = pd.DataFrame(cost["table"])
    rates = pd.DataFrame([{"pass": k, "images per second": v} for k, v in cost["rates"].items()])
    return (tables.readable(rates, digits=1, caption=f"Measured throughput at 224 px ({cost['device']})"),
            tables.readable(estimate.assign(hours=estimate.seconds / 3600).drop(columns="seconds"), digits=1,
                            caption="The thesis's pair on CIFAR-10, by stage: images through each network and the time at the "
                                    "rates above"))


def cost_text(cost: Mapping[str, Any]) -> str:
    """What the thesis's pair on CIFAR-10 costs in hours, its largest stages, and the thesis's recipe without caches."""
    estimate = pd.DataFrame(cost["table"])
    cached = estimate[~estimate.stage.str.startswith("thesis recipe")]
    uncached = estimate[estimate.stage.str.startswith("thesis recipe")]
    on_gpu = "GPU" in cost["device"] or "NVIDIA" in cost["device"]
    return (
        f"At the rates measured on {cost['device']}, the thesis's pair on CIFAR-10 needs about {cached.seconds.sum() / 3600:.0f} hours "
        f"of computation; the largest stages are "
        + " and ".join(f"{stage} ({seconds / cached.seconds.sum():.0%})"
                       for stage, seconds in cached.groupby("stage").seconds.sum().nlargest(2).items()) + ". "
        f"The thesis's recipe run as written, with the teacher and the whole student evaluated in every epoch, would need "
        f"{uncached.seconds.sum() / 3600:.0f} hours for the thesis regime's two arms alone. "
        + ("" if on_gpu else "These are CPU rates: no GPU was available when they were measured. On a GPU, divide the "
           "images per stage in the table, which do not depend on the machine, by the rates measured there.")
    )


def repeats_thesis(found: Mapping[str, Any], regime: str) -> bool:
    """Whether validation chose the thesis's (T, α) in ``regime`` of a record, so that its ``tlkd_chosen`` arm
    is the ``tlkd_thesis`` arm again (the same networks), not an independent arm."""
    chosen = found["chosen"][regime]
    return (chosen["temperature"], chosen["alpha"]) == tuple(found["config"]["thesis_kd"])


def without_repeated_arm(frame: pd.DataFrame, found: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` (rows with ``regime`` and ``arm``) without the ``tlkd_chosen`` rows of the regimes where
    :func:`repeats_thesis`: a table must not show one arm twice, as if it confirmed itself."""
    repeated = [regime for regime in found["chosen"] if repeats_thesis(found, regime)]
    return frame[~((frame["arm"] == "tlkd_chosen") & frame["regime"].isin(repeated))].reset_index(drop=True)


def _stopping(found: Mapping[str, Any]) -> str:
    """When the thesis regime's students of a record stopped, against the cap on epochs."""
    runs = without_repeated_arm(pd.DataFrame(found["runs"]), found)
    epochs = runs[runs.regime == "thesis"].epochs
    cap = found["config"]["max_epochs"]
    early = int((epochs < cap).sum())
    return f"; {early} of its {len(epochs)} students stopped early, after {epochs.min()} to {epochs.max()} of at most {cap} epochs"


def recorded_teacher(found: Mapping[str, Any]) -> list[str]:
    """The weights files of the teacher's networks in an MHIST record (one, or an ensemble's members)."""
    return [weights for role, weights in found["weights"].items() if role != "student"]


def teacher_note(found: Mapping[str, Any], config: TlkdConfig) -> str:
    """A warning line (ending in a newline) when the record's teacher is not the one ``config`` trains (a
    record made before a change of teacher), else an empty string."""
    configured, recorded = PAIRS[config.pair].teacher_networks(), recorded_teacher(found)
    if len(configured) == len(recorded):
        return ""
    return (f"Note: this record was made with a teacher of {len(recorded)} network(s) ({', '.join(recorded)}); the "
            f"configuration now trains a teacher of {len(configured)} ({', '.join(configured)}), and the next full "
            "run of this chapter records it. Every number below is the record's.\n")


def dataset_name(found: Mapping[str, Any]) -> str:
    """The data set of a record in words: ``"MHIST"`` or ``"CIFAR-10"``."""
    return DATASET_WORDS[PAIRS[found["config"]["pair"]].dataset]


def data_source(found: Mapping[str, Any]) -> str:
    """The copy of the data a record read (its loader's ``source``, e.g. ``"CIFAR-10 (JPEG copy)"``), or the data
    set's name for a record made before the source was kept."""
    return found.get("source") or dataset_name(found)


def _teacher_words(found: Mapping[str, Any]) -> str:
    """The teacher of a record: its network, an ensemble's members, or the network trained from scratch."""
    networks = recorded_teacher(found)
    if not networks:
        return (f"an AirbenchNet trained from scratch at 32 px for {found['config']['teacher_epochs']} epochs "
                f"(best validation epoch {_range(pd.DataFrame(found['teachers']).best_epoch)})")
    return networks[0] if len(networks) == 1 else f"the ensemble of {' + '.join(networks)}"


def _one_view(teachers: pd.DataFrame) -> str:
    """The teacher's accuracy on one view, where it averages test-time views (empty otherwise)."""
    if "one_view_accuracy" not in teachers or teachers.one_view_accuracy.isna().any():
        return ""
    one = teachers.one_view_accuracy
    return (f" with its test-time mirror views, {tables.mean_std_text(100 * one.mean(), 100 * one.std(), 1)} % on one view "
            "(what its students see and distil from)")


def _student(found: Mapping[str, Any]) -> str:
    """The student network of a record, by its timm name."""
    return PAIRS[found["config"]["pair"]].student


def _range(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return f"{low}" if low == high else f"{low} to {high}"


def overview(found: Mapping[str, Any]) -> str:
    """The split sizes, networks, teacher scores and chosen (T, α) of a record, one line each; the
    thesis regime's line also says when its students stopped."""
    teachers, counts = pd.DataFrame(found["teachers"]), found["data_counts"]
    auc = (f", AUC {tables.mean_std_text(teachers.auc.mean(), teachers.auc.std(), 3)}"
           if "auc" in teachers and teachers.auc.notna().all() else "")
    lines = [f"{data_source(found)}: {counts['train']} training, {counts['val']} validation and {counts['test']} test "
             f"images; teacher {_teacher_words(found)}, student {_student(found)} at {found['config']['size']} px; "
             f"teacher test accuracy {tables.mean_std_text(100 * teachers.accuracy.mean(), 100 * teachers.accuracy.std(), 1)} %"
             + auc + _one_view(teachers)]
    lines += [f"{regime} regime: (T, α) "
              + ("chosen on validation accuracy" if regime in found["config"].get("grid_regimes", [regime])
                 else "taken from the thesis regime's choice on validation")
              + f": T = {chosen['temperature']:g}, α = {chosen['alpha']:g}"
              + (" (the thesis's: its chosen arm is not shown apart)" if repeats_thesis(found, regime) else "")
              + (_stopping(found) if regime == "thesis" else "")
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
    out[what] = [f"{stats.signed(m)} ± {s:.2f}" if ok else "—" for m, s, ok in zip(frame["mean"], frame["std"], present)]
    out["95 % interval"] = [f"{stats.signed(lo)} to {stats.signed(hi)}" if ok else "—"
                            for lo, hi, ok in zip(frame["low"], frame["high"], present)]
    out = out.drop(columns=["mean", "std", "low", "high"])
    return out[[c for c in out.columns if c != "verdict"] + ["verdict"]]


def score_tables(runs: pd.DataFrame, name: str) -> tuple[tables.Table, tables.Table]:
    """Test scores per regime and arm on data set ``name``, and TL+KD − TL paired over seeds (hypothesis 1);
    AUC where recorded (two classes). Pass ``runs`` through :func:`without_repeated_arm` first."""
    scores = tables.readable(labelled(arm_scores(runs)), METRIC_HEADERS, scale=100, digits=1,
                             caption=f"{name} test scores, mean ± std over seeds")
    effects = effect_cells(effects_table(runs), "TL+KD − TL (points)")
    effects["metric"] = effects["metric"].map(METRIC_WORDS)
    auc = " (AUC in points of %)" if "AUC" in set(effects["metric"]) else ""
    return scores, tables.readable(labelled(effects), {"metric": "metric"}, caption=f"TL+KD minus TL, paired over seeds{auc}")


def true_positive_tables(found: Mapping[str, Any]) -> list[tables.Table]:
    """Per regime and KD arm (the chosen one only where it is not the thesis's again): correct test images per
    class, TL+KD − TL (the thesis's Table 6.2)."""
    confusion, classes = found["confusion"], found["classes"]
    return [tables.readable(true_positive_change(confusion, regime, arm, classes), digits=1,
                            caption=f"Correct test images per class, {ARM_LABELS[arm]} − TL only, {REGIME_WORDS[regime]}")
            for regime in confusion for arm in ("tlkd_thesis", "tlkd_chosen")
            if not (arm == "tlkd_chosen" and repeats_thesis(found, regime))]


def speed_shown(history: pd.DataFrame, thresholds: tuple[float, ...]) -> tuple[pd.DataFrame, tables.Table]:
    """:func:`~kdcourse.studies.tlkd.tables.speed_table` (every effect column present) and its table; pass
    ``history`` through :func:`without_repeated_arm` first."""
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
    for column in ("TL mean", "TL std", "TL+KD mean", "TL+KD std", "teacher accuracy"):
        if column in shown:
            shown[column] = 100 * shown[column]
    shown = shown[[c for c in shown.columns if c != "verdict"] + ["verdict"]]
    shown["sweep"] = shown["sweep"].map(SWEEP_WORDS)
    shown["level"] = [f"{level:g}" for level in shown["level"]]  # 0.25 and 0.95, not rounded to one decimal
    shown["arm"] = shown["arm"].map(ARM_LABELS)
    return h4, tables.readable(shown, {"TL": "TL accuracy (%)", "TL+KD": "TL+KD accuracy (%)",
                                       "teacher accuracy": "teacher accuracy (%)"}, scale=1, digits=1,
                               caption="Test accuracy under each sweep level, TL+KD minus TL paired over seeds")


def share_table(shares: pd.DataFrame, what: str, foreground: str = "strokes") -> tables.Table:
    """Foreground share and the foreground's area per model, mean ± std over images and seeds; ``foreground``
    names it (``"strokes"`` on MNIST, ``"object"`` for a GrabCut mask)."""
    summary = shares.groupby("model", sort=False)[["share", "stroke"]].agg(["mean", "std"])
    summary.columns = [f"{c} {s}" for c, s in summary.columns]
    headers = {"share": f"positive SHAP mass on the {foreground} (%)", "stroke": f"the {foreground}' share of the image (%)"
               if foreground.endswith("s") else f"the {foreground}'s share of the image (%)"}
    seeds = ", ".join(map(str, sorted(shares.seed.unique())))
    return tables.readable(summary, headers, scale=100, digits=1, caption=f"{what}: {shares.image.nunique()} test "
                           f"images × seeds {seeds}, mean ± std over images and seeds")


def share_effects(shares: pd.DataFrame, comparisons: tuple[tuple[str, str], ...] = FOREGROUND_COMPARISONS,
                  ) -> tuple[pd.DataFrame, tables.Table]:
    """:func:`~kdcourse.studies.tlkd.foreground.foreground_effects` of ``comparisons`` and its table (points)."""
    effects = foreground_effects(shares, comparisons)
    caption = "Differences in foreground share (points): over seeds (per-seed means) and over images"
    caption += f". Last column, the claim's verdict: {stats.JOINT_RULE[0].lower() + stats.JOINT_RULE[1:]}"
    return effects, tables.readable(effects, scale=1, digits=2, caption=caption)


def mnist_record(foreground: ForegroundOutcome, seeds: tuple[int, ...], samples: int) -> dict:
    """The JSON-ready record of an MNIST foreground run."""
    return {"shares": json_records(foreground.shares), "images": foreground.images,
            "seconds": round(foreground.seconds, 1), "seeds": list(seeds), "samples": samples}


def summary_text(mhist: Mapping[str, Any] | None, cifar: Mapping[str, Any] | None) -> str:
    """The one-line summary of a full-profile result file: each data set's mean test accuracy per regime and arm."""
    parts = []
    for found, name in ((cifar, "CIFAR-10"), (mhist, "MHIST")):
        if not found:
            parts.append(f"{name} not run")
            continue
        means = pd.DataFrame(found["runs"]).groupby(["regime", "arm"], sort=False).accuracy.mean().reset_index()
        parts.append(f"{name}: " + "; ".join(f"{row.regime} {row.arm} {row.accuracy:.4f}" for row in means.itertuples()))
    return "; ".join(parts) + " (test accuracy, mean over seeds)"


def cifar_record(outcome: TlkdOutcome, photo: PhotoForeground | None, sizes: pd.DataFrame | None,
                 rates: dict[str, float] | None = None) -> dict:
    """The JSON-ready record of a CIFAR-10 run: :func:`outcome_record`, the foreground shares of hypothesis 2
    with the sentence on how many GrabCut masks were usable, the explained test ``images`` with their
    ``labels``, how many images were ``tried`` at which working ``side``, and the seconds of the SHAP maps
    (:func:`kdcourse.studies.tlkd.foreground.photo_foreground`), the student's size comparison
    (:func:`kdcourse.studies.tlkd.costs.student_sizes`) and the networks' throughput
    (:func:`kdcourse.studies.tlkd.costs.study_rates`)."""
    record = outcome_record(outcome) | {"device": provenance.device_description()}
    if rates is not None:
        record["rates"] = {name: round(rate, 1) for name, rate in rates.items()}
    if photo is not None:
        record["foreground"] = {"shares": json_records(photo.shares), "masks": photo.found, "seconds": round(photo.seconds, 1),
                                "images": photo.objects.indices.tolist(), "labels": photo.labels.tolist(),
                                "tried": photo.objects.tried, "side": photo.objects.side}
    if sizes is not None:
        record["sizes"] = json_records(sizes)
    return record


PARTS = ("cifar10", "mhist", "mnist_foreground")  # the parts of the chapter's record, each run or not run


def full_record(mhist: dict | None, mnist: dict | None, cifar: dict | None, cost: dict | None,
                previous: Mapping[str, Any] | None = None) -> dict:
    """The findings a full-profile run writes: each part's record, the cost record of the thesis's pair and the
    one-line summary. A part that did not run keeps its record from ``previous`` (the result file so far:
    ``{"provenance", "results"}``), with the commit and date of the run that made it under ``"carried"``, so
    that running one part never erases another; without one it is ``"not run"``."""
    parts = dict(zip(PARTS, (cifar, mhist, mnist), strict=True))
    record: dict[str, Any] = {"carried": {}}
    for part, value in parts.items():
        earlier = (previous or {}).get("results", {}).get(part)
        if value is None and isinstance(earlier, dict):
            value = earlier
            record["carried"][part] = (previous["results"].get("carried", {}).get(part)
                                       or {key: previous["provenance"][key] for key in ("commit", "date")})
        record[part] = value if value is not None else "not run"
    found = {part: record[part] if isinstance(record[part], dict) else None for part in PARTS}
    return record | {"cost": cost, "summary": summary_text(found["mhist"], found["cifar10"])}


def carried_note(results: Mapping[str, Any], part: str) -> str:
    """A line saying that ``part`` of a result file's ``results`` comes from an earlier run (empty when it does not)."""
    carried = results.get("carried", {}).get(part)
    if not carried:
        return ""
    return (f"This part comes from an earlier full run (commit {carried['commit']}, {carried['date'][:10]}), kept when a "
            "later run recorded the chapter's other parts.")


PHOTO_COMPARISONS = (("tlkd_thesis", "tl"), ("teacher", "tl"), ("teacher", "tlkd_thesis"))  # hypothesis 2 on CIFAR-10


def teacher_gaps(found: Mapping[str, Any]) -> pd.DataFrame:
    """Teacher minus TL student in test accuracy (points), paired over seeds, per regime of a record: the
    room a distillation study has. Columns of :class:`kdcourse.stats.Effect` with ``regime``."""
    teachers = pd.DataFrame(found["teachers"]).set_index("seed").accuracy
    runs = pd.DataFrame(found["runs"])
    rows = []
    for regime in dict.fromkeys(runs.regime):
        tl = runs[(runs.regime == regime) & (runs.arm == "tl")].set_index("seed").accuracy
        rows.append({"regime": regime, **stats.paired_effect(teachers[tl.index], tl).as_dict()})
    return pd.DataFrame(rows)


AIRBENCH_PAPER = {"accuracy": 94.0, "epochs": 9.9, "train": 50_000}  # airbench94 on the release, on a GPU (%)


def teacher_text(found: Mapping[str, Any]) -> str:
    """What a teacher trained from scratch reached and cost per seed, beside the airbench94 paper's result and
    how our run differs from it; empty for a pretrained teacher."""
    if recorded_teacher(found):
        return ""
    teachers, paper = pd.DataFrame(found["teachers"]), AIRBENCH_PAPER
    accuracy, minutes = 100 * teachers.accuracy, teachers.train_seconds / 60
    source = data_source(found)
    copy = f"reads {source}, not the release, " if source != "CIFAR-10" else ""
    return (f"The teacher reaches {tables.mean_std_text(accuracy.mean(), accuracy.std(), 1)} % test accuracy after "
            f"{found['config']['teacher_epochs']} epochs, in {tables.mean_std_text(minutes.mean(), minutes.std(), 1)} "
            f"minutes of training per seed ({found['device']}). The airbench94 paper reports {paper['accuracy']:.1f} % "
            f"after {paper['epochs']:g} epochs (ours minus the paper's: {accuracy.mean() - paper['accuracy']:+.1f} "
            f"points). Our run "
            f"{copy}trains on {found['data_counts']['train']:,} images where the paper trains on all "
            f"{paper['train']:,} (it keeps no validation split), and leaves out the paper's lookahead (a moving "
            "average of the weights copied back into the network during training); how much each of these costs "
            "was not measured apart.")


def gap_text(found: Mapping[str, Any]) -> str:
    """The teacher–student gap of each regime in one sentence."""
    gaps = teacher_gaps(found)
    return (f"On {dataset_name(found)} the teacher leads the TL student by "
            + " and ".join(f"{Effect.from_dict(row).describe(1)} in the {REGIME_WORDS[row['regime']]}"
                           for row in gaps.to_dict("records")) + ".")


TRAINING_STAGES = ("teacher", "thesis regime", "fine-tuning regime", "sweep teachers", "sweep students")  # weights learnt


def stage_table(found: Mapping[str, Any]) -> tables.Table:
    """The computing time of each stage of a run (its training, caches and SHAP maps), in minutes and shares;
    the caption gives the total and the part spent training networks (:data:`TRAINING_STAGES`)."""
    seconds = dict(found["stage_seconds"])
    if "foreground" in found:
        seconds["SHAP maps (hypothesis 2)"] = found["foreground"]["seconds"]
    if "sizes" in found:
        seconds["the student's size comparison"] = float(pd.DataFrame(found["sizes"]).seconds.sum())
    frame = pd.DataFrame({"stage": list(seconds), "minutes": [np.nan if v is None else v / 60 for v in seconds.values()]})
    frame["share (%)"] = 100 * frame.minutes / frame.minutes.sum()
    total, unknown = frame.minutes.sum(), int(frame.minutes.isna().sum())
    training = frame[frame.stage.isin(TRAINING_STAGES)].minutes.sum()
    note = f"; {unknown} stage(s) of unknown cost, read from files written before costs were kept" if unknown else ""
    return tables.readable(frame, digits=1, caption=f"{dataset_name(found)}: computing time by stage, {total:.0f} minutes "
                                                    f"in all, {training:.0f} of them training networks "
                                                    f"({found['device']}{note})")


def rates_table(found: Mapping[str, Any]) -> tables.Table:
    """The throughput of a record's networks (images per second) at the sizes and batches they train with."""
    frame = pd.DataFrame([{"network and pass": name, "images per second": rate} for name, rate in found["rates"].items()])
    return tables.readable(frame, digits=0, caption=f"Throughput of the study's networks ({found['device']}): the "
                                                    f"student at {found['config']['size']} px in batches of "
                                                    f"{found['config']['batch_size']}, the teacher as it trains")


def sizes_table(found: Mapping[str, Any]) -> tables.Table:
    """The student's size comparison of a CIFAR-10 record: probe accuracy and throughput per image side."""
    sizes = pd.DataFrame(found["sizes"])
    shown = pd.DataFrame({"side (px)": sizes["size"], "probe validation accuracy (%)": 100 * sizes.probe_val_accuracy,
                          "forward (images/s)": sizes["forward"], "forward+backward (images/s)": sizes["forward+backward"]})
    return tables.readable(shown, digits=1, caption=f"The pretrained student at {in_words(len(shown))} image sides: a linear probe on "
                                                    "its frozen features, and its speed")


def thesis_comparison_text(found: Mapping[str, Any]) -> str:
    """Our thesis-regime TL and TL+KD (thesis setting) on CIFAR-10 beside the thesis's results, and how to read them."""
    runs = pd.DataFrame(found["runs"])
    thesis = runs[runs.regime == "thesis"]
    tl, kd = (thesis[thesis.arm == arm].accuracy for arm in ("tl", "tlkd_thesis"))
    h1 = effects_table(without_repeated_arm(runs, found))
    effect = _effect_of(h1, regime="thesis", arm="tlkd_thesis", metric="accuracy")
    (tl_mean, tl_std), (kd_mean, kd_std) = THESIS_CIFAR["tl"], THESIS_CIFAR["tlkd"]
    return (f"The thesis reports {tl_mean:.2f} ± {tl_std:.2f} % for its ResNet-18 with TL alone and {kd_mean:.2f} ± {kd_std:.2f} % "
            f"with TL+KD at T = 10, α = 0.1, both selected on the test set. In the same regime, a frozen backbone with a new "
            f"head, our {_student(found)} at {found['config']['size']} px reaches "
            f"{tables.mean_std_text(100 * tl.mean(), 100 * tl.std(), 2)} % with TL alone and "
            f"{tables.mean_std_text(100 * kd.mean(), 100 * kd.std(), 2)} % with TL+KD at the same setting, selected on "
            f"validation; paired over seeds the difference is {effect.describe()}. "
            + ("The levels are not comparable: another student, far smaller, at a smaller side, and another teacher. "
               if PAIRS[found["config"]["pair"]].student != "resnet18.tv_in1k" else
               "The networks are the thesis's, but our schedule and our selection are not. ")
            + "What does compare is the direction and size of the paired gain under honest selection, which is what the "
            "thesis's hypothesis is about.")


def photo_lessons_text(shares: pd.DataFrame, effects: pd.DataFrame, masks_found: str) -> str:
    """What the CIFAR-10 foreground shares (hypothesis 2 on photographs) and their effects say."""
    by_pair = effects.set_index(["model", "baseline"])
    means = shares.groupby("model").share.mean()
    kd_tl = by_pair.loc[("tlkd_thesis", "tl")]
    names = {"teacher": "the teacher", "tl": "the TL student", "tlkd_thesis": "the TL+KD student"}
    return (
        f"* CIFAR-10, hypothesis 2: {masks_found}. Of its positive SHAP mass the teacher puts {100 * means['teacher']:.1f} % "
        f"on the object, the TL student {100 * means['tl']:.1f} % and the TL+KD student {100 * means['tlkd_thesis']:.1f} % "
        f"(the objects cover {100 * shares.stroke.mean():.1f} % of the image). TL+KD − TL: "
        f"{stats.signed(kd_tl['seeds mean'])} points over seeds ({kd_tl['seeds verdict']}), "
        f"{stats.signed(kd_tl['images mean'])} points over images ({kd_tl['images verdict']}). "
        + _direction(kd_tl, names["tlkd_thesis"], names["tl"], "the object")
        + " " + _direction(by_pair.loc[("teacher", "tl")], names["teacher"], names["tl"], "the object"))


def _effect_of(frame: pd.DataFrame, **where: object) -> Effect:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return Effect.from_dict(rows.iloc[0].to_dict())


def _arm_text(h1: pd.DataFrame, regime: str, arm: str, setting: str) -> str:
    """TL+KD − TL of one arm: accuracy in full, macro F1 and (two classes) AUC briefly."""
    def effect(metric: str) -> Effect:
        return _effect_of(h1, regime=regime, arm=arm, metric=metric)

    others = [f"{METRIC_WORDS[m]} {effect(m).short()}, {effect(m).verdict}" for m in ("f1", "auc") if m in set(h1.metric)]
    return f"TL+KD at {setting} changes it by {effect('accuracy').describe()} ({'; '.join(others)})"


def label_noise_text(h4: pd.DataFrame, retrained: bool = False) -> str:
    """Which label-noise levels of :func:`~kdcourse.studies.tlkd.tables.sweep_table` clear the noise, read with
    the sweeps' teacher in mind: one that learned the clean labels leaks them, one ``retrained`` on the same
    noisy labels does not (empty without a label-noise sweep)."""
    rows = h4[h4.sweep == "label_noise"]
    if rows.empty:
        return ""
    cleared = [f"{level:g}" for level in rows[rows.verdict == stats.VERDICTS[0]].level]
    if not cleared:
        return (f"In this record no label-noise level (of {len(rows)}) clears the noise"
                + (", with a teacher that learned from the same noisy labels." if retrained else ", leak or not."))
    which = (f"the one label-noise level where TL+KD clears the noise is {cleared[0]}" if len(cleared) == 1 else
             f"the label-noise levels where TL+KD clears the noise are {' and '.join(cleared)}")
    if retrained:
        return (f"In this record, {which} (of {len(rows)} levels), with a teacher that learned from the same noisy "
                "labels as its student: no clean label reaches the student, so the gain is the teacher's, not a leak.")
    return (f"In this record, {which} (of {len(rows)} levels): exactly where the teacher's knowledge of the clean "
            "labels, rather than robustness to noise, can explain a gain.")


def lessons_text(found: Mapping[str, Any], speed: pd.DataFrame, h4: pd.DataFrame) -> str:
    """What a record says about hypotheses 1, 3 and 4, one bullet each (per regime for 1)."""
    runs, sweeps = pd.DataFrame(found["runs"]), pd.DataFrame(found["sweeps"])
    h1 = effects_table(without_repeated_arm(runs, found))
    lines = []
    for regime in dict.fromkeys(runs.regime):
        tl = runs[(runs.regime == regime) & (runs.arm == "tl")].accuracy
        chosen = found["chosen"][regime]
        thesis_t, thesis_alpha = found["config"]["thesis_kd"]
        settings = {"tlkd_thesis": f"the thesis's T = {thesis_t:g}, α = {thesis_alpha:g}",
                    "tlkd_chosen": f"the T = {chosen['temperature']:g}, α = {chosen['alpha']:g} chosen on validation"}
        arms = "; ".join(_arm_text(h1, regime, arm, settings[arm]) for arm in kd_arms(h1, regime))
        lines.append(
            f"* {dataset_name(found)}, {REGIME_WORDS[regime]}: TL alone reaches {tables.mean_std_text(100 * tl.mean(), 100 * tl.std(), 1)} % "
            f"test accuracy; {arms}."
            + (" Validation chose the thesis's setting here, so there is no second, independent KD arm in this regime."
               if repeats_thesis(found, regime) else ""))
    cleared = h4[h4.verdict == stats.VERDICTS[0]]
    settings = "the thesis's (T, α), which validation also chose" if sweeps.arm.nunique() == 2 else "both KD settings"
    lines.append(f"* {dataset_name(found)}: of the {len(h4)} sweep comparisons (every level, {settings}), {len(cleared)} "
                 f"{'clears' if len(cleared) == 1 else 'clear'} the noise"
                 + (": " + "; ".join(f"{SWEEP_WORDS[r.sweep]} {r.level:g}, {ARM_LABELS[r.arm]}: {stats.signed(r.mean)} points"
                                     for r in cleared.itertuples()) if len(cleared) else "")
                 + "." + (" Under label noise the teacher leaks the clean labels (see hypothesis 4)."
                          if "label_noise" in set(cleared.sweep)
                          and "label_noise" not in found["config"].get("retrained_sweeps", []) else ""))
    faster = speed[speed.verdict == stats.VERDICTS[0]] if "verdict" in speed.columns else speed.iloc[:0]
    lines.append(f"* {dataset_name(found)}, epochs to a validation threshold: {len(faster)} of {len(speed)} comparisons "
                 "clear the noise.")
    return "\n".join(lines)


def _direction(row: pd.Series, model: str, baseline: str, foreground: str = "the strokes") -> str:
    """One sentence from a row of ``foreground_effects``, decided by its joint verdict (seeds and images)."""
    if row["verdict"] == stats.VERDICTS[2]:
        return f"By the joint rule, {model} and {baseline} cannot be told apart on this measure."
    more = "more" if row["images mean"] > 0 else "less"
    verb = "puts" if row["verdict"] == stats.VERDICTS[0] else "may put"
    return (f"{model[0].upper() + model[1:]} {verb} {more} of its attribution on {foreground} than {baseline} "
            f"({row['verdict']} by the joint rule).")


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
        + " Mass off the strokes is not all misplaced: a dark pixel where ink could be is evidence too (the hole of a 0)."
    )


def verdict_counts(mhist: Mapping[str, Any] | None, mnist: Mapping[str, Any] | None,
                   cifar: Mapping[str, Any] | None = None) -> dict[str, pd.Series]:
    """Every verdict the chapter draws from the records, by the hypothesis it tests: the effects of
    hypotheses 1, 3 and 4 on each data set, one joint verdict per foreground comparison on MNIST and on
    CIFAR-10 (hypothesis 2)."""
    counts: dict[str, pd.Series] = {}
    for found in (cifar, mhist):
        if not found:
            continue
        name = dataset_name(found)
        runs, history = (without_repeated_arm(pd.DataFrame(found[key]), found) for key in ("runs", "history"))
        speed = speed_table(history, tuple(found["config"]["thresholds"]))
        counts[f"hypothesis 1, {name} test scores"] = effects_table(runs).verdict
        if "foreground" in found:
            counts[f"hypothesis 2, {name} foreground shares"] = foreground_effects(
                pd.DataFrame(found["foreground"]["shares"]), PHOTO_COMPARISONS).verdict
        counts[f"hypothesis 3, {name} epochs to a threshold"] = speed.get("verdict", pd.Series(dtype=object)).dropna()
        counts[f"hypothesis 4, {name} sweeps"] = sweep_table(pd.DataFrame(found["sweeps"])).verdict
    if mnist:
        counts["hypothesis 2, MNIST foreground shares"] = foreground_effects(pd.DataFrame(mnist["shares"])).verdict
    return counts


def verdicts_text(mhist: Mapping[str, Any] | None, mnist: Mapping[str, Any] | None,
                  cifar: Mapping[str, Any] | None = None) -> str:
    """How many verdicts the chapter draws, how many clear the noise, and what chance alone would give
    (empty when no record is there); with foreground shares, the joint rule that judges them."""
    counts = verdict_counts(mhist, mnist, cifar)
    total = sum(len(v) for v in counts.values())
    if total == 0:
        return ""
    cleared = sum(int((v == stats.VERDICTS[0]).sum()) for v in counts.values())
    parts = "; ".join(f"{what}: {len(v)} ({int((v == stats.VERDICTS[0]).sum())} clear)" for what, v in counts.items())
    joint = ("" if not (mnist or (cifar and "foreground" in cifar)) else " The foreground shares are judged twice, over "
             "seeds and over test images, and the course's joint rule turns the two into one verdict per claim. "
             f"{stats.JOINT_RULE}")
    return (f"* In all, the chapter draws {total} verdicts from the records ({parts}), and {cleared} of them clear the "
            "noise. At the 95 % level about one comparison in twenty clears the noise by chance when nothing changes, "
            f"so about {total / 20:.1f} of these {total} would clear with no effect at all: a single cleared verdict among "
            "so many is weak evidence, all the more as the metrics of one arm come from the same runs." + joint)
