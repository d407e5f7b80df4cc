"""The TL+KD chapter's figures, drawn from a run's record (live, or the recorded full-profile one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor

from kdcourse.course import plots
from kdcourse.studies.tlkd.config import ARM_LABELS, ARMS
from kdcourse.studies.tlkd.report import REGIME_WORDS, SWEEP_WORDS

__all__ = ["mask_figure", "confusion_figure", "learning_curves", "sweep_figure", "shap_figure", "share_histogram"]


def mask_figure(images: Tensor, masks: np.ndarray, labels: list[str], source: str, columns: int = 6) -> Figure:
    """The first ``columns`` uint8 ``images`` ``(N, 3, H, W)`` above their foreground ``masks`` ``(N, H, W)``."""
    fig, axes = plots.panels(2, columns, height=1.9)
    for column in range(columns):
        axes[0, column].imshow(images[column].permute(1, 2, 0).numpy())
        axes[0, column].set_title(labels[column], fontsize=9)
        axes[1, column].imshow(masks[column], cmap="gray")
        for ax in axes[:, column]:
            ax.axis("off")
    fig.suptitle(f"GrabCut foreground masks, {source} (white: foreground)")
    fig.tight_layout()
    return fig


def confusion_figure(found: Mapping[str, Any], regime: str = "finetune") -> Figure:
    """Test confusion matrices of TL and of TL+KD at the chosen (T, α) in ``regime``, mean over seeds."""
    classes, confusion = found["classes"], found["confusion"]
    fig, axes = plots.panels(1, 2, height=3.4)
    for ax, arm in zip(axes, ("tl", "tlkd_chosen"), strict=True):
        mean = np.mean([np.array(m) for m in confusion[regime][arm].values()], axis=0)
        plots.heatmap(mean, classes, classes, row_title="true class", col_title="predicted class", value_format="{:.1f}",
                      title=f"{ARM_LABELS[arm]}\n(fine-tuning, mean over seeds)", ax=ax)
    return fig


def learning_curves(history: pd.DataFrame) -> Figure:
    """Validation accuracy per epoch of every arm in ``history``, mean ± std over seeds, one panel per regime."""
    fig, axes = plots.panels(1, 2, height=3.6)
    for ax, regime in zip(axes, dict.fromkeys(history.regime)):
        for arm in [a for a in ARMS if a in set(history.arm[history.regime == regime])]:
            rows = history[(history.regime == regime) & (history.arm == arm)]
            curve = rows.groupby("epoch").val_accuracy.agg(["mean", "std"])
            ax.plot(curve.index, 100 * curve["mean"], label=ARM_LABELS[arm])
            ax.fill_between(curve.index, 100 * (curve["mean"] - curve["std"]), 100 * (curve["mean"] + curve["std"]),
                            alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(REGIME_WORDS[regime])
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sweep_figure(sweeps: pd.DataFrame) -> Figure:
    """Test accuracy (%) against the level of each sweep, mean ± std over seeds, one panel per sweep."""
    fig, axes = plots.panels(1, 4, height=3.2)
    for ax, (sweep, group) in zip(axes, sweeps.groupby("sweep", sort=False)):
        for arm in dict.fromkeys(group.arm):
            points = group[group.arm == arm].groupby("level").accuracy.agg(["mean", "std"])
            ax.errorbar(points.index, 100 * points["mean"], yerr=100 * points["std"], marker="o", capsize=3,
                        label=ARM_LABELS[arm])
        levels = sorted(group.level.unique())
        ax.set_xticks(levels, [f"{v:g}" for v in levels], rotation=45)
        ax.set_xlabel(SWEEP_WORDS[sweep])
    axes[0].set_ylabel("test accuracy (%)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def shap_figure(found: Mapping[str, Any]) -> Figure:
    """The recorded SHAP maps (``found["shap"]``) of the TL and TL+KD students, red for and blue against."""
    shap_found = found["shap"]
    fig, axes = plots.panels(2, len(shap_found["images"]), height=2.4)
    for row, arm in enumerate(("tl", "tlkd_chosen")):
        for column, values in enumerate(shap_found["maps"][arm]):
            values = np.array(values)
            limit = np.abs(values).max() or 1.0
            axes[row, column].imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[row, column].axis("off")
            label = found["classes"][shap_found["labels"][column]]
            axes[row, column].set_title(f"{ARM_LABELS[arm].split(',')[0]}, test image "
                                        f"{shap_found['images'][column]} ({label})", fontsize=7)
    fig.suptitle("SHAP attributions of the predicted class (red: for, blue: against), fine-tuned students, first seed")
    fig.tight_layout()
    return fig


def share_histogram(shares: pd.DataFrame) -> Figure:
    """Histogram of the foreground share (%) per MNIST network, over images and seeds."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for model in ("teacher", "kd", "scratch"):
        ax.hist(100 * shares[shares.model == model].share, bins=30, range=(0, 100), histtype="step", label=model)
    ax.set_xlabel("positive SHAP mass on stroke pixels (%)")
    ax.set_ylabel("images × seeds")
    ax.legend()
    return fig
