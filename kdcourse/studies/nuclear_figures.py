"""The figures of the nuclear-norm chapter: the spectrum of the first layer and the accuracy of the
students with it truncated, against the rank and against the MACs, from a
:class:`kdcourse.studies.nuclear_findings.GridFindings` (accuracies plotted in %)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from kdcourse.course import plots
from kdcourse.studies.nuclear_findings import GridFindings, beta_text

__all__ = ["spectrum_figure", "truncation_figure"]


def spectrum_figure(found: GridFindings, spectra: dict[str, list[float]]) -> Figure:
    """The singular values of ``W₁`` (log scale) for each β at ``alpha_shown``, first seed."""
    fig, ax = plots.panels(1, 1, height=4)
    for beta in found.betas:
        spectrum = np.asarray(spectra[f"alpha={found.alpha_shown:g},beta={beta:g}"])
        ax.semilogy(np.arange(1, len(spectrum) + 1), spectrum, label=f"β = {beta_text(beta)}")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σᵢ of W₁")
    ax.set_title(f"Spectrum of the first layer, α = {found.alpha_shown:g}, seed {found.seeds[0]}")
    ax.legend()
    return fig


def truncation_figure(found: GridFindings) -> Figure:
    """Test accuracy of the students at ``alpha_shown`` with ``W₁`` truncated, against the rank (left)
    and against the first layer's MACs per image (right), one curve per β."""
    curve = found.curve()
    fig, (left, right) = plots.panels(1, 2, height=3.8)
    for beta in found.betas:
        rows, label = curve.loc[beta], f"β = {beta_text(beta)}"
        std = rows["std"].fillna(0)
        plots.errorbar_curve(list(rows.index), rows["mean"], std, xlabel="rank r of W₁", ylabel="test accuracy (%)",
                             title=f"Truncated SVD of W₁ (α = {found.alpha_shown:g})", label=label, logx=True, ax=left)
        plots.errorbar_curve(list(rows["kmacs"]), rows["mean"], std, xlabel="first-layer MACs per image (thousands)",
                             ylabel="test accuracy (%)", title="The same, against cost", label=label, logx=True, ax=right)
    dense_line = right.axvline(784 * 784 / 1000, color="grey", linestyle=":")
    rank_ticks = [r for r in found.ranks if r & (r - 1) == 0] or list(found.ranks)  # powers of two: no overlap
    left.set_xticks(rank_ticks, [str(r) for r in rank_ticks])
    mac_ticks = [2 ** k for k in range(4, 11)]  # 16 ... 1024 thousand MACs
    right.set_xticks(mac_ticks, [str(t) for t in mac_ticks])
    left.legend()
    right.legend([dense_line], ["dense first layer"], loc="lower right")
    for ax in (left, right):
        ax.set_ylim(max(0, curve["mean"].min() - 2), 100)
    fig.tight_layout()
    return fig
