"""The inputs, tables, figures and sentences of the MHIST chapter (:mod:`kdcourse.studies.mhist`).

:func:`study_inputs` finds the data and weights a run may use (stand-ins in smoke runs only, said so);
:func:`read_findings` gathers what the chapter reports, from a live run in the full profile and
from the recorded full run in a smoke build, so that every table, figure and sentence below
renders either alike; :func:`result_record` is what the chapter saves of its live run.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from kdcourse import backbones, data, stats
from kdcourse.backbones import Backbone
from kdcourse.costs import count_macs, measure_latency
from kdcourse.course import findings, plots, tables
from kdcourse.stats import signed
from kdcourse.studies import mhist
from kdcourse.studies.common import json_records

__all__ = [
    "NAME", "SUMMARY_HEADERS", "REPORTED", "study_inputs", "inputs_text", "example_figure", "study_config",
    "network_costs", "costs_table", "recipe_text", "summary_table", "effects_table", "MhistFindings",
    "read_findings", "imagenet_text", "curves_figure", "grid_figure", "distillation_text", "reported_table",
    "reports_text", "result_record", "conclusion_text",
]

NAME = "mhist_transfer"
SUMMARY_HEADERS = {"test_auc": "test AUC", "test_auc_head": "test AUC after feature extraction only",
                   "balanced_accuracy": "balanced accuracy", "val_auc": "validation AUC"}
# test AUC × 100 of the source reports (single runs), and the arm of this study that matches each model
REPORTED = pd.DataFrame([
    {"model": "teacher, pretrained", "report 000": 85.13, "subclass poster": 89.22, "arm": "teacher"},
    {"model": "teacher, from scratch", "report 000": 68.86, "subclass poster": 73.17, "arm": "teacher_scratch"},
    {"model": "student, pretrained, labels only", "report 000": 73.08, "subclass poster": 77.32, "arm": "student"},
    {"model": "student, KD", "report 000": 80.09, "subclass poster": 80.72, "arm": "kd"},
    {"model": "student, subclass KD", "report 000": 82.17, "subclass poster": 85.28, "arm": "known_skd"},
])
GENERATED_NOTE = ("SMOKE RUN ON GENERATED IMAGES: MHIST is not on this machine, so this run uses a small generated "
                  "set in MHIST's file layout (pink noise with purple blobs, not histology).")


def _study_data(profile: str, config: mhist.MhistConfig) -> tuple[mhist.MhistConfig, data.ImageData, str]:
    """MHIST if present; in smoke only, a generated stand-in in MHIST's layout when MHIST is not there at
    all. A damaged copy (a missing image, a bad CSV row) stops with its error, in every profile."""
    if profile == "full" or data.mhist.available():
        return config, data.load_mhist(size=config.size, limit=config.limit), "MHIST"
    folder = data.write_generated_mhist(tempfile.mkdtemp(prefix="mhist-generated-"))
    generated = mhist.config_for(profile, seeds=config.seeds, pair=config.pair, data="generated")
    return generated, data.load_mhist(folder, size=generated.size, limit=generated.limit), "generated"


def _study_weights(profile: str, config: mhist.MhistConfig) -> mhist.MhistConfig:
    """The configuration with pretrained weights if they load; in smoke only, random weights otherwise."""
    try:
        mhist.load_backbones(config)
        return config
    except backbones.MissingWeightsError as error:
        if profile == "full":
            raise
        print(f"SMOKE RUN WITH RANDOM WEIGHTS: {error}")
        return mhist.config_for(profile, seeds=config.seeds, pair=config.pair, data=config.data, pretrained=False)


def study_inputs(profile: str, config: mhist.MhistConfig) -> tuple[mhist.MhistConfig, data.ImageData, str]:
    """The configuration, data set and data source (``"MHIST"`` or ``"generated"``) of a run of ``config``.

    The full profile needs MHIST and the pretrained weights and raises what is missing; a smoke run
    stands in a generated set for a missing MHIST and random weights for missing weight files, and
    prints that it does."""
    config, dataset, source = _study_data(profile, config)
    return _study_weights(profile, config), dataset, source


def inputs_text(config: mhist.MhistConfig, dataset: data.ImageData, source: str) -> str:
    """What a run uses: the data, its split sizes, the resolution and the weights (and the stand-in note)."""
    note = GENERATED_NOTE + "\n" if source == "generated" else ""
    return (f"{note}data: {source}, {len(dataset.train)} training, {len(dataset.val)} validation and "
            f"{len(dataset.test)} test images at {config.size} px; "
            f"weights: {'ImageNet' if config.pretrained else 'random'}\n{config}")


def example_figure(split: data.ImageSplit, per_class: int = 5) -> Figure:
    """A row of images per class, each titled with its pathologists' votes for SSA."""
    fig, axes = plots.panels(2, per_class, height=3.4)
    for row, label in enumerate(data.MHIST_CLASSES):
        index = (split.y == row).nonzero().squeeze(1)[:per_class]
        for ax in axes[row]:
            ax.axis("off")
        for ax, i in zip(axes[row], index.tolist()):
            ax.imshow(split.x[i].permute(1, 2, 0).numpy())
            ax.set_title(f"{label}: {split.extras['votes'][i].item()} of 7 say SSA")
    fig.tight_layout()
    return fig


def study_config(profile: str, config: mhist.MhistConfig) -> dict:
    """The configuration of the study whose findings the chapter shows (the recorded one in a smoke build)."""
    return findings.value(NAME, "config", profile, live={**vars(config), "seeds": list(config.seeds)})


def network_costs(nets: dict[str, Backbone], size: int) -> pd.DataFrame:
    """One row per role: network, parameters (frozen BatchNorm affine buffers included), MACs per image
    (millions) and median latency of one image (ms, this machine) at ``size`` px."""
    rows = []
    for role, net in nets.items():
        model = net.model.eval()
        shape = (3, size, size)
        frozen_affine = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("weight", "bias")))
        rows.append({"role": role, "network": net.name,
                     "parameters": sum(p.numel() for p in model.parameters()) + frozen_affine,
                     "MACs": count_macs(model, shape) / 1e6,
                     "latency": measure_latency(model, shape, repeats=10, warmup=2)})
    return pd.DataFrame(rows)


def costs_table(costs: pd.DataFrame, size: int) -> tables.Table:
    """:func:`network_costs` as a table."""
    return tables.readable(costs, {"MACs": f"MACs per image at {size} px (millions)",
                                   "latency": "latency, one image (ms, median, this machine)"}, digits=1,
                           caption="The networks, each with its two-way head")


def recipe_text(study: dict) -> str:
    """The resolution, epochs, batch size, seeds and distillation grid of the reported study."""
    grid_text = (f"T ∈ {{{', '.join(f'{t:g}' for t in study['temperatures'])}}} and "
                 f"α ∈ {{{', '.join(f'{a:g}' for a in study['alphas'])}}}")
    return (
        f"In the study this chapter reports, the images are {study['size']} px, the head phase runs "
        f"{study['head_epochs']} epochs and the fine-tuning phase {study['finetune_epochs']} "
        f"(batches of {study['batch_size']}), on seeds {', '.join(map(str, study['seeds']))}. "
        f"The distillation temperature and weight are chosen on the validation AUC over {grid_text}, and "
        "the subclass and assistant arms use the chosen pair."
    )


def summary_table(summary: pd.DataFrame, caption: str) -> tables.Table:
    """:func:`kdcourse.studies.mhist.arm_summary` with the arms in words."""
    shown = summary.copy()
    shown.insert(0, "arm", [mhist.ARM_LABELS.get(arm, arm) for arm in shown.index])
    return tables.readable(shown.reset_index(drop=True), SUMMARY_HEADERS, digits=3, caption=caption)


def effects_table(rows: pd.DataFrame) -> tables.Table:
    """Rows of :func:`kdcourse.studies.mhist.effect_table` as text: each difference over seeds and over
    test images with its interval and verdict."""
    seeds = zip(rows["seeds mean"], rows["seeds std"], rows["seeds low"], rows["seeds high"], rows["seeds verdict"])
    images = zip(rows["images mean"], rows["images low"], rows["images high"], rows["images verdict"])
    shown = pd.DataFrame({
        "comparison": [f"{mhist.ARM_LABELS[a]} − {mhist.ARM_LABELS[b]}" for a, b in zip(rows.arm, rows.baseline)],
        "over seeds": [f"{signed(m)} ± {s:.2f} ({signed(lo)} to {signed(hi)}): {v}" for m, s, lo, hi, v in seeds],
        "over test images": [f"{signed(m)} ({signed(lo)} to {signed(hi)}): {v}" for m, lo, hi, v in images],
    })
    return tables.readable(shown, {"over seeds": "paired over seeds: mean ± std (95 % interval): verdict",
                                   "over test images": "bootstrap over test images: mean (95 % interval): verdict"},
                           caption="Differences in test AUC, in AUC points (0.01 AUC = 1 point)")


@dataclass
class MhistFindings:
    """What the chapter reports (see :class:`kdcourse.studies.mhist.MhistOutcome` for the fields read),
    with the per-arm ``summary``, the ``comparison`` of :func:`kdcourse.studies.mhist.effect_table` and
    the paired effect over seeds of every comparison (``seed_effect``)."""

    runs: pd.DataFrame
    grid: pd.DataFrame
    scores: dict
    labels: list[int]
    history: dict[str, list[float]]
    chosen: dict[str, float]
    summary: pd.DataFrame
    comparison: pd.DataFrame
    seed_effect: dict[tuple[str, str], stats.Effect]

    def auc(self, arm: str) -> str:
        """Test AUC of ``arm``, mean ± std over seeds."""
        return f"{self.summary.loc[arm, 'test_auc mean']:.3f} ± {self.summary.loc[arm, 'test_auc std']:.3f}"

    def verdict(self, arm: str, baseline: str) -> str:
        """The paired effect over seeds and the bootstrap over test images of ``arm`` − ``baseline``."""
        row = self.comparison.set_index(["arm", "baseline"]).loc[(arm, baseline)]
        return (f"{self.seed_effect[(arm, baseline)].describe()}; over test images {signed(row['images mean'])} "
                f"points (95 % interval {signed(row['images low'])} to {signed(row['images high'])}): "
                f"{row['images verdict']}")


def read_findings(profile: str, outcome: mhist.MhistOutcome) -> MhistFindings:
    """The findings of ``outcome`` in the full profile, of the recorded full run otherwise."""
    runs = findings.frame(NAME, "runs", profile, live=outcome.runs)
    scores = findings.value(NAME, "scores", profile, live=outcome.scores)
    labels = findings.value(NAME, "labels", profile, live=outcome.labels)
    seed_effect = {(a, b): stats.paired_effect(runs[runs.arm == a].set_index("seed").test_auc,
                                               runs[runs.arm == b].set_index("seed").test_auc)
                   for a, b in mhist.COMPARISONS}
    return MhistFindings(runs, findings.frame(NAME, "grid", profile, live=outcome.grid), scores, labels,
                         findings.value(NAME, "history", profile, live=outcome.history),
                         findings.value(NAME, "chosen", profile, live=outcome.chosen), mhist.arm_summary(runs),
                         mhist.effect_table(runs, scores, labels), seed_effect)


def _pretrained_gain(f: MhistFindings) -> dict[str, stats.Effect]:
    return {role: f.seed_effect[(role, f"{role}_scratch")] for role in ("teacher", "student")}


def imagenet_text(f: MhistFindings) -> str:
    """What ImageNet weights and the fine-tuning phase add, and how the two intervals are read."""
    gain = _pretrained_gain(f)
    fine_tuning = {role: mhist.phase_effect(f.runs, role) for role in ("teacher", "student")}
    return (
        f"With ImageNet weights the teacher reaches a test AUC of **{f.auc('teacher')}** and the student "
        f"**{f.auc('student')}**; from scratch, on the same budget, {f.auc('teacher_scratch')} and "
        f"{f.auc('student_scratch')}. The gains are {gain['teacher'].describe()} for the teacher and "
        f"{gain['student'].describe()} for the student. Fine-tuning the last stage adds "
        f"{fine_tuning['teacher'].describe()} to feature extraction alone for the teacher and "
        f"{fine_tuning['student'].describe()} for the student. {stats.RULE} Over seeds, each difference "
        "pairs two networks of the same seed; over test images, the bootstrap resamples the test images and "
        "recomputes the seed-averaged AUC difference, so it measures how much the verdict depends on the "
        f"particular {len(f.labels)} test images rather than on the seeds."
    )


def curves_figure(f: MhistFindings, head_epochs: int) -> Figure:
    """Validation AUC per epoch of both phases (left) and test ROC curves (right), first seed."""
    fig, (left, right) = plots.panels(1, 2)
    for arm in ("teacher", "teacher_scratch", "student", "student_scratch", "kd"):
        curve = f.history.get(arm, [])
        if curve:
            left.plot(range(1, len(curve) + 1), curve, marker=".", label=mhist.ARM_LABELS[arm])
    left.axvline(head_epochs + 0.5, color="grey", linestyle=":")
    left.set(xlabel="epoch (head phase, then fine-tuning)", ylabel="validation AUC",
             title="Validation AUC per epoch, first seed")
    left.legend(fontsize="small")
    first = str(min(int(s) for s in f.scores["teacher"]))
    truth = np.asarray(f.labels)
    for arm in ("teacher", "student", "kd", "student_scratch", "teacher_scratch"):
        by_seed = f.scores[arm]
        fpr, tpr, _ = roc_curve(truth, np.asarray(by_seed[first] if first in by_seed else by_seed[int(first)]))
        right.plot(fpr, tpr, label=mhist.ARM_LABELS[arm])
    right.plot([0, 1], [0, 1], color="grey", linestyle=":")
    right.set(xlabel="false positive rate (HP called SSA)", ylabel="true positive rate (SSA found)",
              title="Test ROC curves, first seed")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def grid_figure(grid: pd.DataFrame) -> Figure:
    """Validation AUC of the distilled student over the (T, α) grid, mean over seeds."""
    grid_mean = grid.groupby(["temperature", "alpha"])["val_auc"].mean().unstack("alpha")
    fig, ax = plots.panels(1, 1, height=3.2)
    plots.heatmap(grid_mean.to_numpy(), [f"{t:g}" for t in grid_mean.index], [f"{a:g}" for a in grid_mean.columns],
                  row_title="T", col_title="α (weight of the distillation term)",
                  title="Distilled student: validation AUC, mean over seeds", value_format="{:.3f}", ax=ax)
    return fig


def distillation_text(f: MhistFindings) -> str:
    """The chosen (T, α) and every distillation arm against its baseline and control."""
    return (
        f"On validation the best pair is T = {f.chosen['temperature']:g}, α = {f.chosen['alpha']:g}. The student "
        f"distilled with it reaches {f.auc('kd')} against {f.auc('student')} on labels alone: "
        f"{f.verdict('kd', 'student')}. Known subclasses from the votes give {f.auc('known_skd')} "
        f"(against KD {f.verdict('known_skd', 'kd')}; against KD from the same teacher's class logits "
        f"{f.verdict('known_skd', 'known_control')}); learned subclasses give {f.auc('learned_skd')} "
        f"(against KD {f.verdict('learned_skd', 'kd')}; against their control "
        f"{f.verdict('learned_skd', 'learned_control')}). Through the assistant the student reaches "
        f"{f.auc('takd')} (against direct KD {f.verdict('takd', 'kd')})."
    )


def reported_table(summary: pd.DataFrame) -> tables.Table:
    """The reports' test AUC beside this study's (× 100)."""
    reported = REPORTED.copy()
    mean, std = summary["test_auc mean"], summary["test_auc std"]
    reported["this chapter"] = [f"{100 * mean[a]:.1f} ± {100 * std[a]:.1f}" for a in reported.arm]
    return tables.readable(reported.drop(columns="arm"), {"report 000": "MNIST–MHIST report (single run)",
                                                          "subclass poster": "subclass poster (single run)",
                                                          "this chapter": "this chapter (mean ± std over seeds)"},
                           digits=2, caption="Test AUC × 100")


def reports_text(study: dict) -> str:
    """How the reports' setting and mistakes differ from this study's."""
    return (
        f"Our networks are not theirs: the reports used a ResNet50V2 teacher and a MobileNetV2 student at "
        f"224 px; this record uses the `{study['pair']}` pair ({', '.join(mhist.PAIRS[study['pair']])}) "
        f"at {study['size']} px. The reports' numbers also come with mistakes that make them "
        "incomparable in detail. Both picked the best epoch on the test set and report one run each. "
        "{ref}`The MNIST–MHIST report <source-mnist-mhist-report>` computed the AUC per test batch and "
        "averaged it (an AUC is a ranking over the whole test set; batch AUCs are noisier and biased), kept "
        "training one already-trained student across its sweep, passed raw teacher logits as labels in its "
        "TAKD loss, weighted its subclass loss to almost nothing, and counted FLOPs per batch as if they were "
        "a rate. {ref}`The subclass poster <source-subclass-poster>` combined subclass logits by summing "
        "them rather than by log-sum-exp. Their headline gaps (KD over labels of 7 and 3.4 points, subclass "
        "KD over KD of 2.1 and 4.6) have no interval; ours do."
    )


def result_record(outcome: mhist.MhistOutcome, source: str, costs: pd.DataFrame) -> dict:
    """What the chapter saves of its live run (never the recorded findings): summary, configuration,
    tables, every row, the test scores and the validation curves."""
    config, summary = outcome.config, mhist.arm_summary(outcome.runs)
    comparison = mhist.effect_table(outcome.runs, outcome.scores, outcome.labels)
    line = "; ".join(f"{mhist.ARM_LABELS.get(arm, arm)} {row['test_auc mean']:.3f} ± {row['test_auc std']:.3f}"
                     for arm, row in summary.iterrows())
    return {
        "summary": f"{line} (test AUC, mean ± std over seeds {list(config.seeds)})",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "data": source, "weights": outcome.weights, "data_counts": outcome.data_counts,
        "tables": {"Test AUC per arm (mean and std over seeds)": json_records(summary.round(4)),
                   "Differences in test AUC (points)": json_records(comparison.round(3)),
                   "Networks": json_records(costs.round(3))},
        "runs": json_records(outcome.runs), "grid": json_records(outcome.grid), "chosen": outcome.chosen,
        "scores": {arm: {str(seed): values for seed, values in by_seed.items()}
                   for arm, by_seed in outcome.scores.items()},
        "labels": outcome.labels, "history": outcome.history, "cache_seconds": round(outcome.cache_seconds, 1),
    }


def conclusion_text(f: MhistFindings, study: dict) -> str:
    """The chapter's conclusions, as a bulleted list."""
    gain = _pretrained_gain(f)
    best = max(("kd", "known_skd", "learned_skd", "takd"), key=lambda a: f.summary.loc[a, "test_auc mean"])
    return (
        f"* ImageNet weights are worth {gain['teacher'].short()} of test AUC to the teacher and "
        f"{gain['student'].short()} to the student ({gain['teacher'].verdict} and "
        f"{gain['student'].verdict}).\n"
        f"* The best distilled student is {mhist.ARM_LABELS[best]} at {f.auc(best)}; the "
        f"teacher it learned from reaches {f.auc('teacher')}.\n"
        f"* Distillation on top of transfer learning: {f.seed_effect[('kd', 'student')].describe()}.\n"
        f"* Every verdict above comes from {len(study['seeds'])} seeds and {len(f.labels)} test images; a single "
        "run picked on the test set, as in the reports, cannot separate effects of this size from noise."
    )
