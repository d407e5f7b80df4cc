"""The figures of the MHIST chapter: example images, the head diagnosis, validation and ROC curves, and
the distillation grids (from the findings of :mod:`kdcourse.studies.mhist_findings`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from kdcourse import data
from kdcourse.course import plots
from kdcourse.studies import mhist
from kdcourse.studies.mhist_findings import MhistFindings

__all__ = ["example_figure", "diagnosis_figure", "curves_figure", "grid_figure"]

STARTS = {"timm": ("timm's start, ±1/√classes", "tab:red"), "fan-in": ("fan-in start, ±1/√features", "tab:blue")}


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


def diagnosis_figure(diagnosis: pd.DataFrame) -> Figure:
    """One panel per network: validation AUC per epoch of the head phase from timm's start and from the
    fan-in start (one line per seed), and the linear probe's validation AUC as a dashed line."""
    networks = list(dict.fromkeys(diagnosis.network))
    cols = min(2, len(networks))
    fig, axes = plots.panels(math.ceil(len(networks) / cols), cols, height=3.0, squeeze=False)
    for ax, name in zip(axes.flat, networks):
        rows = diagnosis[diagnosis.network == name]
        for start, (label, colour) in STARTS.items():
            for i, curve in enumerate(rows[rows.start == start].curve):
                ax.plot(range(1, len(curve) + 1), curve, color=colour, alpha=0.8, label=label if i == 0 else None)
        probe = rows[rows.start == "probe"].val_auc
        if len(probe):
            ax.axhline(float(probe.iloc[0]), color="grey", linestyle="--", label="linear probe")
        ax.set(xlabel="epoch of the head phase", ylabel="validation AUC", title=mhist.SHORT_NAMES.get(name, name))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(networks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def curves_figure(f: MhistFindings, head_epochs: int) -> Figure:
    """Validation AUC per epoch of both phases (left) and test ROC curves (right), first seed."""
    fig, (left, right) = plots.panels(1, 2)
    for arm in ("teacher", "student", "student_scratch", "kd", "kd_ensemble"):
        curve = f.history.get(arm, [])
        if curve:
            left.plot(range(1, len(curve) + 1), curve, marker=".", label=mhist.arm_label(arm))
    left.axvline(head_epochs + 0.5, color="grey", linestyle=":")
    left.set(xlabel="epoch (head phase, then fine-tuning)", ylabel="validation AUC",
             title="Validation AUC per epoch, first seed")
    left.legend(fontsize="small")
    truth = np.asarray(f.labels)
    for arm in ("teacher", "ensemble", "student", "kd", "kd_ensemble", "student_scratch"):
        by_seed = {int(seed): values for seed, values in f.scores[arm].items()}
        fpr, tpr, _ = roc_curve(truth, np.asarray(by_seed[min(by_seed)]))
        right.plot(fpr, tpr, label=mhist.arm_label(arm))
    right.plot([0, 1], [0, 1], color="grey", linestyle=":")
    right.set(xlabel="false positive rate (HP called SSA)", ylabel="true positive rate (SSA found)",
              title="Test ROC curves, first seed")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def grid_figure(f: MhistFindings) -> Figure:
    """Validation AUC of the distilled student over each teacher's (T, α) grid, mean over seeds, titled
    with the labels-only student's mean validation AUC for comparison."""
    teachers = list(dict.fromkeys(f.grid.teacher))
    fig, axes = plots.panels(1, len(teachers), height=3.2, squeeze=False)
    student = f.mean("student", "val_auc")
    for ax, teacher in zip(axes.flat, teachers):
        rows = f.grid[f.grid.teacher == teacher]
        mean = rows.groupby(["temperature", "alpha"])["val_auc"].mean().unstack("alpha")
        plots.heatmap(mean.to_numpy(), [f"{t:g}" for t in mean.index], [f"{a:g}" for a in mean.columns],
                      row_title="T", col_title="α (weight of the distillation term)",
                      title=f"KD from the {mhist.arm_label(teacher).split(' (')[0]}\n"
                            f"(labels-only student: {student:.3f})", value_format="{:.3f}", ax=ax)
    return fig
