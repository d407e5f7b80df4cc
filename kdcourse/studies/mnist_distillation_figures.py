"""The figures of the MNIST distillation chapter: the T × α grid, the temperature curve and LIME maps.

They are drawn from ``runs`` of :func:`kdcourse.studies.mnist_distillation.run_study` (accuracies as
fractions, plotted in %) and, for the LIME maps, from the trained networks of a live run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from kdcourse import data as kd_data
from kdcourse import explain
from kdcourse.course import plots
from kdcourse.studies.mnist_distillation import grid_table
from kdcourse.studies.mnist_distillation_findings import TemperatureCurve

__all__ = ["grid_heatmap", "temperature_figure", "lime_figure"]


def grid_heatmap(runs: pd.DataFrame) -> Figure:
    """Heatmap of the KD students' test accuracy (%) over the T × α grid, each cell mean ± std over seeds."""
    test_grid = grid_table(runs, "test_accuracy")
    mean = test_grid["mean"].unstack("alpha") * 100
    std = test_grid["std"].unstack("alpha").fillna(0) * 100
    labels = np.vectorize(lambda m, s: f"{m:.2f}\n±{s:.2f}")(mean.values, std.values)
    _, ax = plots.panels(height=0.55 * len(mean) + 1.6)
    return plots.heatmap(
        mean.values, [f"{t:g}" for t in mean.index], [f"{a:g}" for a in mean.columns], row_title="temperature T",
        col_title="α (weight of the KD term)",
        title=f"KD student test accuracy (%), mean ± std over {runs.seed.nunique()} seeds",
        annotations=labels, colorbar_label="test accuracy (%)", ax=ax,
    )


def temperature_figure(runs: pd.DataFrame, curve: TemperatureCurve) -> Figure:
    """Test accuracy (%) of the KD student against T at ``curve.alpha``, with the scratch student's mean."""
    points = grid_table(runs, "test_accuracy").xs(curve.alpha, level="alpha")
    ax = plots.errorbar_curve(
        curve.temperatures, (points["mean"] * 100).tolist(), (points["std"].fillna(0) * 100).tolist(),
        xlabel="temperature T", ylabel="test accuracy (%)",
        title=f"KD student against temperature (α = {curve.alpha:g}), mean ± std", label="KD student", logx=True,
    )
    ax.set_xticks(curve.temperatures, [f"{t:g}" for t in curve.temperatures])
    scratch = runs[runs.model == "scratch"].test_accuracy.mean() * 100
    ax.axhline(scratch, color="grey", linestyle="--", label=f"from scratch ({scratch:.2f} %)")
    ax.legend()
    return ax.figure


def lime_figure(
    trained: Mapping[str, nn.Module], test: kd_data.ImageSplit, digits: int, samples: int
) -> tuple[Figure, pd.DataFrame]:
    """LIME maps of the teacher, the KD and the scratch student of ``trained`` for the first test image
    of each digit below ``digits`` (``samples`` perturbations each), and the pixel-wise correlation of
    each student's map with the teacher's: a DataFrame with columns ``digit``, ``kd``, ``scratch``."""
    indices = [int((test.y == digit).nonzero()[0]) for digit in range(digits)]
    pixels = (test.x[indices] * kd_data.MNIST_STD + kd_data.MNIST_MEAN).clamp(0, 1)
    names = ["teacher", "kd", "scratch"]
    weights: dict[str, list[np.ndarray]] = {name: [] for name in names}
    fig, axes = plots.panels(digits, 4, height=2.5, squeeze=False)
    for row, image in enumerate(pixels):
        axes[row, 0].imshow(image[0], cmap="gray")
        axes[row, 0].set_title(f"digit {int(test.y[indices[row]])}")
        for col, name in enumerate(names, start=1):
            lime_map = explain.lime_explanation(trained[name], image, preprocess=_normalise_mnist,
                                                num_samples=samples, seed=0)
            weights[name].append(lime_map.weights.ravel())
            limit = np.abs(lime_map.weights).max() or 1.0
            axes[row, col].imshow(image[0], cmap="gray", alpha=0.5)
            axes[row, col].imshow(lime_map.weights, cmap="RdYlGn", vmin=-limit, vmax=limit, alpha=0.6)
            axes[row, col].set_title(f"{name}: class {lime_map.label}\np = {lime_map.probability:.2f}")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("LIME maps: green supports the predicted class, red opposes it")
    fig.tight_layout()
    correlations = pd.DataFrame({
        "digit": [int(test.y[i]) for i in indices],
        **{name: [np.corrcoef(t, m)[0, 1] for t, m in zip(weights["teacher"], weights[name])]
           for name in ("kd", "scratch")},
    })
    return fig, correlations


def _normalise_mnist(x: torch.Tensor) -> torch.Tensor:
    return (x - kd_data.MNIST_MEAN) / kd_data.MNIST_STD
