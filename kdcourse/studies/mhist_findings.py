"""The inputs, tables and findings of the MHIST chapter (:mod:`kdcourse.studies.mhist`).

:func:`study_inputs` finds the data and weights a run may use (stand-ins in smoke runs only, said so);
:func:`read_sizes`, :func:`read_diagnosis` and :func:`read_findings` gather what the chapter reports,
from a live run in the full profile and from the recorded full run in a smoke build, so that every
table, figure and sentence renders either alike. The figures are in
:mod:`kdcourse.studies.mhist_figures`, the sentences in :mod:`kdcourse.studies.mhist_lessons` and the
result file in :mod:`kdcourse.studies.mhist_record`. AUCs in the frames are fractions; differences
are spoken in AUC points (0.01 AUC = 1 point).
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from kdcourse import backbones, data
from kdcourse.backbones import Backbone
from kdcourse.costs import count_macs, measure_latency
from kdcourse.course import findings, tables
from kdcourse.stats import signed
from kdcourse.studies import mhist

__all__ = [
    "NAME", "SUMMARY_HEADERS", "study_inputs", "inputs_text", "study_config", "network_costs", "read_costs",
    "costs_table", "budget_table", "read_sizes", "sizes_table", "read_diagnosis", "diagnosis_table", "OWN_TEACHER",
    "MhistFindings", "read_findings", "section_of", "effects_table", "summary_table",
]

NAME = "mhist_transfer"
SUMMARY_HEADERS = {"test_auc": "test AUC", "test_auc_head": "test AUC after feature extraction only",
                   "balanced_accuracy": "balanced accuracy", "val_auc": "validation AUC"}
GENERATED_NOTE = ("SMOKE RUN ON GENERATED IMAGES: MHIST is not on this machine, so this run uses a small generated "
                  "set in MHIST's file layout (pink noise with purple blobs, not histology).")
# the teacher each distilled student learned from (an arm of the study)
OWN_TEACHER = {"kd": "teacher", "kd_ensemble": "ensemble", "known_skd": "teacher_known",
               "learned_skd": "teacher_learned", "takd": "assistant", "known_control": "teacher_known",
               "learned_control": "teacher_learned", "assistant": "teacher"}


def _study_data(profile: str, config: mhist.MhistConfig) -> tuple[mhist.MhistConfig, Callable[[int], data.ImageData],
                                                                   str]:
    """MHIST if present; in smoke only, a generated stand-in in MHIST's layout when MHIST is not there at
    all. A damaged copy (a missing image, a bad CSV row) stops with its error, in every profile, and so
    does a missing MHIST in the full profile (the loader's error says how to get it)."""
    root, source = None, "MHIST"
    if not data.mhist.available():
        if profile == "full":
            data.load_mhist(size=config.size, limit=config.limit)  # raises MissingDataError, with the fix
        root, source = data.write_generated_mhist(tempfile.mkdtemp(prefix="mhist-generated-")), "generated"
        config = dataclasses.replace(config, data="generated")

    @functools.lru_cache(maxsize=1)
    def load(size: int) -> data.ImageData:
        return data.load_mhist(root, size=size, limit=config.limit)

    return config, load, source


def _study_weights(profile: str, config: mhist.MhistConfig) -> mhist.MhistConfig:
    """The configuration with pretrained weights if they load; in smoke only, random weights otherwise."""
    try:
        mhist.load_backbones(config)
        return config
    except backbones.MissingWeightsError as error:
        if profile == "full":
            raise
        print(f"SMOKE RUN WITH RANDOM WEIGHTS: {error}")
        return dataclasses.replace(config, pretrained=False)


def study_inputs(profile: str, config: mhist.MhistConfig) -> tuple[mhist.MhistConfig, Callable[[int], data.ImageData],
                                                                    str]:
    """The configuration of a run of ``config``, ``load(size)`` → its data set at ``size`` px (the same
    source at every size; the last size loaded is kept), and the source (``"MHIST"`` or ``"generated"``).

    The full profile needs MHIST and the pretrained weights and raises what is missing; a smoke run
    stands in a generated set for a missing MHIST and random weights for missing weight files, and
    prints that it does."""
    config, load, source = _study_data(profile, config)
    return _study_weights(profile, config), load, source


def inputs_text(config: mhist.MhistConfig, dataset: data.ImageData, source: str) -> str:
    """What a run uses: the data, its split sizes, the resolution and the weights (and the stand-in note)."""
    note = GENERATED_NOTE + "\n" if source == "generated" else ""
    return (f"{note}data: {source}, {len(dataset.train)} training, {len(dataset.val)} validation and "
            f"{len(dataset.test)} test images at {config.size} px; "
            f"weights: {'ImageNet' if config.pretrained else 'random'}\n{config}")


def study_config(profile: str, config: mhist.MhistConfig) -> dict:
    """The configuration of the study whose findings the chapter shows (the recorded one in a smoke build)."""
    live = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()}
    return findings.value(NAME, "config", profile, live=live)


def _roles(name: str, team: mhist.Team) -> str:
    """What network ``name`` is in ``team``, in words."""
    roles = [("ensemble member", name in team.members), ("assistant", name == team.assistant),
             ("student", name == team.student)]
    return ", ".join(role for role, held in roles if held)


def network_costs(nets: dict[str, Backbone], size: int, team: mhist.Team) -> pd.DataFrame:
    """One row per network of ``team``: its role, parameters (frozen BatchNorm affine buffers included),
    MACs per image (millions) and median latency of one image (ms, this machine) at ``size`` px."""
    rows = []
    for name, net in nets.items():
        model, shape = net.model.eval(), (3, size, size)
        frozen_affine = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("weight", "bias")))
        rows.append({"network": mhist.SHORT_NAMES.get(name, name), "role": _roles(name, team), "name": name,
                     "parameters": sum(p.numel() for p in model.parameters()) + frozen_affine,
                     "MACs": count_macs(model, shape) / 1e6,
                     "latency": measure_latency(model, shape, repeats=10, warmup=2)})
    return pd.DataFrame(rows)


def read_costs(profile: str, costs: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`network_costs` that the sentences quote (parameters and MACs; recorded in smoke)."""
    return findings.frame(NAME, "costs", profile, live=costs)


def costs_table(costs: pd.DataFrame, size: int) -> tables.Table:
    """:func:`network_costs` as a table."""
    return tables.readable(costs.drop(columns="name"), {"MACs": f"MACs per image at {size} px (millions)",
                                                        "latency": "latency, one image (ms, median, this machine)"},
                           digits=1, caption="The networks, each with its two-way head")


def budget_table(study: dict) -> tables.Table:
    """The training of every arm: epochs of the head phase (on cached pooled features), of fine-tuning
    (the last stage and the head) and of training from scratch (every layer), from the configuration."""
    head, tune = study["head_epochs"], study["finetune_epochs"]
    cells = len(study["temperatures"]) * len(study["alphas"])
    rows = [
        ("each ensemble member, labels only (the single teacher is one of them)", head, tune, 0),
        ("ensemble teacher: the members' mean logits, no training of its own", 0, 0, 0),
        (("student on labels; students distilled from the single teacher, the ensemble, the assistant, "
          "subclasses or a control; the assistant"), head, tune, 0),
        (f"each of the {cells} cells of each distillation grid (one student per T and α)", head, tune, 0),
        (("subclass teachers: a new subclass head on the single teacher's fine-tuned features (the teacher "
          "is not trained again)"), head, 0, 0),
        ("student from scratch", 0, 0, head + tune),
    ]
    frame = pd.DataFrame(rows, columns=["arm", "head", "fine-tuning", "scratch"])
    return tables.readable(frame, {"head": "head phase (epochs)", "fine-tuning": "fine-tuning (epochs)",
                                   "scratch": "from scratch, every layer (epochs)"},
                           caption="What each arm trains, per seed")


def read_sizes(profile: str, sizes: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`kdcourse.studies.mhist.compare_sizes` the chapter reports (recorded in smoke)."""
    return findings.frame(NAME, "sizes", profile, live=sizes)


def sizes_table(sizes: pd.DataFrame) -> tables.Table:
    """Validation and test AUC of the head phase per size and network, mean ± std over seeds."""
    shown = sizes.assign(network=sizes.network.map(lambda n: mhist.SHORT_NAMES.get(n, n)))
    stats = shown.groupby(["size", "network"], sort=False)[["val_auc", "test_auc"]].agg(["mean", "std"])
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return tables.readable(stats, {"size": "size (px)", **SUMMARY_HEADERS}, digits=3,
                           caption="Head phase on unaugmented images, by resolution (mean ± std over seeds)")


def read_diagnosis(profile: str, diagnosis: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`kdcourse.studies.mhist.head_diagnosis` the chapter reports (recorded in smoke)."""
    return findings.frame(NAME, "head_diagnosis", profile, live=diagnosis)


def diagnosis_table(diagnosis: pd.DataFrame) -> tables.Table:
    """Per network and start: the spread of the untrained head's logits, and the validation and test AUC
    after the head phase, mean ± std over seeds (the probe has one value per network)."""
    shown = diagnosis.assign(network=diagnosis.network.map(lambda n: mhist.SHORT_NAMES.get(n, n)))
    stats = shown.groupby(["network", "start"], sort=False)[["logit_std", "val_auc", "test_auc"]].agg(["mean", "std"])
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return tables.readable(stats, {"start": "head started as", "logit_std": "std of the first logits",
                                   **SUMMARY_HEADERS}, digits=3,
                           caption="Head phase from timm's start, from the fan-in start, and the linear probe")


@dataclass
class MhistFindings:
    """What the chapter reports of the study (see :class:`kdcourse.studies.mhist.MhistOutcome` for the
    fields read), with the per-arm ``summary`` and the ``comparison`` of every claim the chapter judges
    (:func:`kdcourse.studies.mhist.effect_table`: both component intervals and the joint verdict)."""

    runs: pd.DataFrame
    grid: pd.DataFrame
    scores: dict
    labels: list[int]
    history: dict[str, list[float]]
    chosen: dict[str, dict[str, float]]
    teacher_network: str
    summary: pd.DataFrame
    comparison: pd.DataFrame

    def mean(self, arm: str, column: str = "test_auc") -> float:
        """Mean over seeds of ``column`` for ``arm``."""
        return float(self.summary.loc[arm, f"{column} mean"])

    def auc(self, arm: str) -> str:
        """Test AUC of ``arm``, mean ± std over seeds."""
        return f"{self.mean(arm):.3f} ± {self.summary.loc[arm, 'test_auc std']:.3f}"

    def claim(self, arm: str, baseline: str) -> pd.Series:
        """The row of ``comparison`` for ``arm`` − ``baseline``."""
        return self.comparison.set_index(["arm", "baseline"]).loc[(arm, baseline)]

    def verdict(self, arm: str, baseline: str) -> str:
        """``arm`` − ``baseline`` in test AUC points over seeds and over test images, each with its 95 %
        interval, and the joint verdict of the claim in bold."""
        row = self.claim(arm, baseline)
        return (f"{signed(row['seeds mean'])} points over seeds ({_interval(row, 'seeds')}) and "
                f"{signed(row['images mean'])} over test images ({_interval(row, 'images')}): "
                f"**{row['verdict']}**")

    def teacher_name(self) -> str:
        """The short name of the network chosen as the single teacher."""
        return mhist.SHORT_NAMES.get(self.teacher_network, self.teacher_network)

    def best_distilled(self) -> str:
        """The arm of :data:`kdcourse.studies.mhist.DISTILLED_ARMS` of best mean validation AUC."""
        return max(mhist.DISTILLED_ARMS, key=lambda arm: self.mean(arm, "val_auc"))


def _interval(row: pd.Series, over: str) -> str:
    """``"95 % interval −0.40 to +1.20"`` of one component (``"seeds"`` or ``"images"``) of a claim."""
    return f"95 % interval {signed(row[f'{over} low'])} to {signed(row[f'{over} high'])}"


def _claims(summary: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """Every comparison the chapter judges: :data:`kdcourse.studies.mhist.COMPARISONS`, the teacher with
    a known-subclass head against the plain teacher, and the best distilled student against labels alone."""
    best = max(mhist.DISTILLED_ARMS, key=lambda arm: summary.loc[arm, "val_auc mean"])
    return tuple(dict.fromkeys((*mhist.COMPARISONS, ("teacher_known", "teacher"), (best, "student"))))


def read_findings(profile: str, outcome: mhist.MhistOutcome) -> MhistFindings:
    """The findings of ``outcome`` in the full profile, of the recorded full run otherwise."""
    runs = findings.frame(NAME, "runs", profile, live=outcome.runs)
    scores = findings.value(NAME, "scores", profile, live=outcome.scores)
    labels = findings.value(NAME, "labels", profile, live=outcome.labels)
    summary = mhist.arm_summary(runs)
    return MhistFindings(runs, findings.frame(NAME, "grid", profile, live=outcome.grid), scores, labels,
                         findings.value(NAME, "history", profile, live=outcome.history),
                         findings.value(NAME, "chosen", profile, live=outcome.chosen),
                         findings.value(NAME, "teacher_network", profile, live=outcome.teacher_network), summary,
                         mhist.effect_table(runs, scores, labels, _claims(summary)))


def section_of(arm: str, baseline: str) -> str:
    """Which section of the chapter discusses the claim ``arm`` − ``baseline``: ``"gaps"`` (teachers and
    student), ``"imagenet"``, ``"subclasses"`` or ``"distillation"``."""
    if baseline.endswith("scratch"):
        return "imagenet"
    if arm in ("teacher", "ensemble"):
        return "gaps"
    if arm.startswith(("known", "learned", "teacher_")):
        return "subclasses"
    return "distillation"


def effects_table(f: MhistFindings, section: str) -> tables.Table:
    """The claims of one ``section`` (:func:`section_of`): each difference paired over seeds and by a
    bootstrap over test images with its 95 % interval, and the joint verdict."""
    rows = f.comparison[[section_of(a, b) == section for a, b in zip(f.comparison.arm, f.comparison.baseline)]]
    shown = pd.DataFrame({
        "comparison": [f"{mhist.arm_label(a)} − {mhist.arm_label(b)}" for a, b in zip(rows.arm, rows.baseline)],
        "seeds": [f"{signed(r['seeds mean'])} ± {r['seeds std']:.2f} ({signed(r['seeds low'])} to "
                  f"{signed(r['seeds high'])})" for _, r in rows.iterrows()],
        "images": [f"{signed(r['images mean'])} ({signed(r['images low'])} to {signed(r['images high'])})"
                   for _, r in rows.iterrows()],
        "verdict": list(rows.verdict),
    })
    return tables.readable(shown, {"seeds": "paired over seeds: mean ± std (95 % interval)",
                                   "images": "bootstrap over test images: mean (95 % interval)",
                                   "verdict": "verdict (joint rule)"},
                           caption="Differences in test AUC, in AUC points (0.01 AUC = 1 point)")


def summary_table(summary: pd.DataFrame, caption: str) -> tables.Table:
    """:func:`kdcourse.studies.mhist.arm_summary` with the arms in words."""
    shown = summary.copy()
    shown.insert(0, "arm", [mhist.arm_label(arm) for arm in shown.index])
    return tables.readable(shown.reset_index(drop=True), SUMMARY_HEADERS, digits=3, caption=caption)
