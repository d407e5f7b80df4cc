"""Matplotlib helpers with one consistent style: white background (readable in dark mode),
labelled axes, light grid."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["PAGE_WIDTH", "apply_style", "panels", "heatmap", "errorbar_curve"]

PAGE_WIDTH = 7.5  # inches: a figure this wide is shown at its own size on the book's page, never shrunk
STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.85,
}


def apply_style() -> None:
    """Install the course's matplotlib style for every later figure."""
    plt.rcParams.update(STYLE)


def panels(nrows: int = 1, ncols: int = 1, *, height: float = 3.6, **kwargs: object) -> tuple[Figure, np.ndarray | Axes]:
    """``plt.subplots`` at the page width (:data:`PAGE_WIDTH`), ``height`` inches per row.

    Every multi-panel figure of the book uses it, so its tick labels and legends keep the size of
    :data:`STYLE` on the page instead of being scaled down with a wider figure."""
    apply_style()
    return plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, height * nrows), **kwargs)


def heatmap(
    values: np.ndarray,
    row_labels: Sequence[object],
    col_labels: Sequence[object],
    *,
    row_title: str,
    col_title: str,
    title: str,
    value_format: str = "{:.2f}",
    colorbar_label: str = "",
    annotations: np.ndarray | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Annotated heatmap of ``values`` ``(rows, cols)``; ``annotations`` (same shape, strings) replace the printed values."""
    apply_style()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1.2 * len(col_labels) + 2, 0.6 * len(row_labels) + 1.5))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    ax.set_title(title)
    middle = np.nanmin(values) + 0.5 * (np.nanmax(values) - np.nanmin(values))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = annotations[i, j] if annotations is not None else value_format.format(values[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if values[i, j] > middle else "white")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    return fig


def errorbar_curve(
    x: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    label: str | None = None,
    logx: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Mean ± std curve with error bars; returns the axes so further curves or lines can be added."""
    apply_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, label=label)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax
