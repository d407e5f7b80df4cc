"""The figures of the subclass distillation chapter: where the digits' test images go among the
learned subclasses, the most confident images of each subclass, and the binary students' accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from kdcourse.course import plots
from kdcourse.kd.subclass import MNIST_SUBCLASSES_PER_CLASS, subclass_assignments
from kdcourse.studies.mnist_subclass_findings import DigitMatch, subclass_name

__all__ = ["subclass_heatmap", "subclass_gallery", "binary_bars"]


def subclass_heatmap(match: DigitMatch) -> Figure:
    """Heatmap of :attr:`DigitMatch.share_of_digit`: where each digit's test images go."""
    _, ax = plots.panels(1, 1, height=5.2)
    names = [subclass_name(k) for k in range(match.share_of_digit.shape[0])]
    return plots.heatmap(match.share_of_digit, names, list(range(match.share_of_digit.shape[1])),
                         row_title="subclass (class.index)", col_title="digit",
                         title=f"Binary learned teacher, seed {match.seed}: where each digit's test images go",
                         value_format="{:.2f}", colorbar_label="share of the digit's images", ax=ax)


def subclass_gallery(teacher: nn.Module, images: Tensor, title: str, per_row: int = 10) -> Figure:
    """The ``per_row`` most confident of ``images`` ``(N, 1, 28, 28)`` in each subclass of the binary learned
    ``teacher``, one row per subclass."""
    with torch.no_grad():
        outputs = torch.cat([teacher(images[i: i + 2048]) for i in range(0, len(images), 2048)])
    assignment = subclass_assignments(outputs, MNIST_SUBCLASSES_PER_CLASS)
    confidence = torch.softmax(outputs, dim=1).max(dim=1).values
    fig, axes = plots.panels(outputs.shape[1], per_row, height=0.75)
    for k in range(outputs.shape[1]):
        members = torch.nonzero(assignment == k).flatten()
        chosen = members[confidence[members].argsort(descending=True)[:per_row]]
        for j in range(per_row):
            axes[k, j].axis("off")
            if j < len(chosen):
                axes[k, j].imshow(images[chosen[j], 0].numpy(), cmap="gray_r")
        axes[k, 0].text(-8, 14, subclass_name(k), ha="right", va="center")
    fig.suptitle(title, y=0.95)
    return fig


def binary_bars(summary: pd.DataFrame, regimes: list[str]) -> Figure:
    """One panel per regime: the binary students' test accuracy (%), mean ± std over seeds, from
    :func:`~kdcourse.studies.mnist_subclass.arm_summary`."""
    fig, axes = plots.panels(len(regimes), 1, height=2.6)
    for ax, regime in zip(np.atleast_1d(axes), regimes):
        rows = summary.loc[[key for key in summary.index if key[:2] == ("binary", regime)]].droplevel([0, 1])
        ax.barh(range(len(rows)), rows["mean"], xerr=rows["std"], color="tab:blue", alpha=0.7, capsize=3)
        ax.set_yticks(range(len(rows)), rows.index)
        ax.invert_yaxis()
        low = (rows["mean"] - rows["std"]).min()
        high = (rows["mean"] + rows["std"]).max()
        ax.set_xlim(low - 0.5 * (high - low) - 0.05, high + 0.2 * (high - low) + 0.05)
        ax.set_xlabel("test accuracy (%), mean ± std over seeds")
        ax.set_title(f"Binary students, {regime}")
    fig.tight_layout()
    return fig
