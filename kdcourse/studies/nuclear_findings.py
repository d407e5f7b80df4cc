"""The tables, figures and sentences of the nuclear-norm chapter.

:class:`GridFindings` holds what the chapter discusses (the runs and truncations of
:func:`kdcourse.studies.nuclear.run_study`, live in the full profile, recorded in a smoke build) with
the paired effects computed once; :class:`RenderLatency` holds the latencies timed when the page is
built. The functions below turn them into tables, figures and prose. Accuracies in the frames are
fractions; tables and sentences speak in percent and in points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from kdcourse import models, provenance
from kdcourse.costs import count_macs
from kdcourse.course import findings, plots
from kdcourse.course.findings import listing
from kdcourse.course.tables import Table, mean_std_text, readable
from kdcourse.stats import Effect, paired_effect, signed
from kdcourse.studies import nuclear
from kdcourse.studies.common import json_records

__all__ = [
    "NAME", "SETTINGS", "METRICS", "METRIC_HEADERS", "METRICS_CAPTION", "COST_TABLE", "beta_text", "settings", "brief",
    "effects_shown", "GridFindings", "grid_text", "metrics_table", "metrics_gap_text", "penalty_cost_table",
    "penalty_cost_text", "distillation_gain_table", "low_rank_table", "tolerance_text", "eurosat_skipped_text",
    "first_seed_spectra", "spectrum_figure", "spectrum_table", "truncation_figure", "chosen_rank_tables",
    "grid_ties_text", "RenderLatency", "time_models", "cost_table", "latency_text", "time_threads",
    "recordings_text", "eurosat_tables", "result_record", "conclusions",
]

NAME = "nuclear_norm"  # the chapter, and its result files
SETTINGS = {"alpha": "α", "beta": "β"}
METRICS = [f"{m} {s}" for m in ("test_accuracy", "precision", "recall", "f1") for s in ("mean", "std")]
METRIC_HEADERS = {**SETTINGS, "test_accuracy": "test accuracy (%)", "precision": "precision (%)",
                  "recall": "recall (%)", "f1": "F1 (%)"}
METRICS_CAPTION = "MNIST: test accuracy, precision, recall and F1 (%), mean ± std over seeds"
COST_TABLE = "MNIST: cost on this machine"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_DENSE = "student (dense)"


def beta_text(beta: float) -> str:
    """β as the chapter writes it: ``0``, ``3·10⁻⁴``, ``10⁻³`` ..."""
    mantissa, exponent = f"{beta:.0e}".split("e")
    if beta == 0 or float(f"{beta:.0e}") != beta:
        return f"{beta:g}"
    power = "10" + str(int(exponent)).translate(_SUPERSCRIPT)
    return power if mantissa == "1" else f"{mantissa}·{power}"


def settings(frame: pd.DataFrame) -> pd.DataFrame:
    """A table indexed by (α, β) with α and β as text columns, the way the chapter writes them."""
    flat = frame.reset_index()
    return flat.assign(alpha=flat.alpha.map(lambda a: f"{a:g}"), beta=flat.beta.map(beta_text))


def brief(effect: Effect, digits: int = 2) -> str:
    """An effect in prose: difference ± std, 95 % interval and verdict (a zero spread said as such)."""
    if effect.std == 0:
        return f"{signed(effect.mean, digits)} {effect.unit} on all {effect.n} seeds: {effect.verdict}"
    return (f"{effect.short(digits)} (95 % interval {signed(effect.low, digits)} to {signed(effect.high, digits)}, "
            f"{effect.n} seeds): {effect.verdict}")


def effects_shown(effects: dict[tuple[float, float], Effect], what: str, *, digits: int = 2,
                  caption: str | None = None) -> Table:
    """Paired effects by (α, β) as a readable table: difference ± std (``what``), 95 % interval, p and verdict."""
    rows = [{"alpha": a, "beta": b, "difference": f"{signed(e.mean, digits)} ± {e.std:.{digits}f}",
             "interval": f"{signed(e.low, digits)} to {signed(e.high, digits)}",
             "p": "< 0.001" if e.p_value < 0.001 else f"{e.p_value:.3g}", "verdict": e.verdict}
            for (a, b), e in effects.items()]
    frame = settings(pd.DataFrame(rows).set_index(["alpha", "beta"]))
    headers = {**SETTINGS, "difference": what, "interval": "95 % interval", "p": "p (paired t)"}
    return readable(frame, headers, caption=caption)


@dataclass
class GridFindings:
    """What the chapter discusses about the MNIST grid: ``runs`` and ``truncation`` of a
    :class:`nuclear.NuclearOutcome` (or their recorded rows) and the configuration ``config`` of the run
    they come from (``vars`` of a :class:`nuclear.NuclearConfig`), with the paired effects of the grid.

    ``alpha_shown`` is the α of the figures (0.5 when on the grid), ``low_rank`` the rank at which
    the truncated students are compared (16 when on the grid), ``middle_beta`` the β the
    conclusions single out (10⁻³ when on the grid)."""

    runs: pd.DataFrame
    truncation: pd.DataFrame
    config: dict[str, Any]
    summary: pd.DataFrame = field(init=False)
    penalty_cost: dict[tuple[float, float], Effect] = field(init=False)
    distillation_gain: dict[tuple[float, float], Effect] = field(init=False)
    rank_gain: dict[tuple[float, float], Effect] = field(init=False)
    chosen_accuracy: dict[tuple[float, float], Effect] = field(init=False)
    low_rank_gain: dict[tuple[float, float], Effect] = field(init=False)

    def __post_init__(self) -> None:
        self.alphas, self.betas, self.seeds, self.ranks = (
            tuple(self.config[k]) for k in ("alphas", "betas", "seeds", "ranks"))
        self.alpha_shown = 0.5 if 0.5 in self.alphas else self.alphas[-1]
        self.low_rank = 16 if 16 in self.ranks else min(self.ranks)
        self.middle_beta = 1e-3 if 1e-3 in self.betas else self.betas[len(self.betas) // 2]
        runs = self.runs
        self.summary = nuclear.arm_summary(runs)
        self.penalty_cost = nuclear.effects_against_unpenalised(runs)
        self.distillation_gain = nuclear.effects_against_undistilled(runs)
        self.rank_gain = nuclear.effects_against_unpenalised(runs, "chosen_rank", scale=1, unit="ranks")
        self.chosen_accuracy = nuclear.effects_against_unpenalised(runs, "chosen_test_accuracy")
        at_low_rank = self.truncation[self.truncation["rank"] == self.low_rank]
        self.low_rank_gain = nuclear.effects_against_unpenalised(at_low_rank)

    def curve(self) -> pd.DataFrame:
        """Test accuracy (mean and std over seeds, %) and first-layer MACs (thousands) of the students
        at ``alpha_shown`` truncated to each rank, indexed by (β, rank)."""
        rows = self.truncation[self.truncation.alpha == self.alpha_shown]
        return rows.groupby(["beta", "rank"]).agg(
            mean=("test_accuracy", lambda v: 100 * v.mean()),
            std=("test_accuracy", lambda v: 100 * v.std(ddof=1)),
            kmacs=("first_layer_macs", lambda v: v.iloc[0] / 1000),
        )

    def mean_std(self, key: tuple[float, float], column: str, digits: int = 2) -> str:
        """``"mean ± std"`` of ``column`` of :func:`nuclear.arm_summary` for the arm ``key`` = (α, β)."""
        return mean_std_text(self.summary.loc[key, column + " mean"], self.summary.loc[key, column + " std"], digits)

    def per_seed(self, key: tuple[float, float], column: str) -> str:
        """The values of ``column`` of one arm, seed by seed, as whole numbers: ``"48, 128, 64"``."""
        alpha, beta = key
        values = self.runs[(self.runs.alpha == alpha) & (self.runs.beta == beta)].sort_values("seed")[column]
        return ", ".join(f"{v:.0f}" for v in values)

    def thresholds(self) -> tuple[dict[float, float | None], dict[float, float | None]]:
        """Per α: the largest β before the first cost in accuracy that clears the noise (``None`` if the
        smallest β already costs), and that first costly β (``None`` if none costs)."""
        free_up_to, first_cost = {}, {}
        for alpha in self.alphas:
            arms = sorted((b, e) for (a, b), e in self.penalty_cost.items() if a == alpha)
            costly = [b for b, e in arms if e.clears_noise and e.mean < 0]
            first_cost[alpha] = min(costly) if costly else None
            free = [b for b, _ in arms if first_cost[alpha] is None or b < first_cost[alpha]]
            free_up_to[alpha] = max(free) if free else None
        return free_up_to, first_cost


def grid_text(config: dict[str, Any], val_size: int) -> str:
    """The training of the grid in a sentence: epochs, temperature, validation images, α, β, seeds."""
    alphas = ", ".join(f"{a:g}" for a in config["alphas"])
    betas = ", ".join(beta_text(b) for b in config["betas"])
    return f"""In the run the findings come from, each student trains for {config["epochs"]} epochs at
$T$ = {config["temperature"]:g} and keeps its best epoch on the
{val_size:,} validation images; the grid is α ∈
{{{alphas}}} × β ∈ {{{betas}}}, for seeds
{", ".join(str(s) for s in config["seeds"])}."""


def metrics_table(summary: pd.DataFrame, caption: str | None = None) -> Table:
    """Test accuracy, precision, recall and F1 (%) per (α, β) of :func:`nuclear.arm_summary`."""
    return readable(settings(summary[METRICS]), METRIC_HEADERS, caption=caption)


def metrics_gap_text(summary: pd.DataFrame) -> str:
    """Why the chapter uses the test accuracy alone: how far precision, recall and F1 stray from it."""
    gap = max((summary[f"{m} mean"] - summary["test_accuracy mean"]).abs().max() for m in ("precision", "recall", "f1"))
    return f"""Precision, recall and F1 are macro averages over the ten digits, in percent; on a nearly
balanced test set like MNIST's they move together with accuracy: here no arm's mean precision,
recall or F1 differs from its mean accuracy by more than {gap:.2f} points. The rest of the chapter
therefore uses the test accuracy."""


def _cost_statement(found: GridFindings, alpha: float, free_up_to: float | None, first: float | None) -> str:
    """What the penalty costs at one α, in words: every β up to the first cost that clears the noise."""
    arms = sorted((b, e) for (a, b), e in found.penalty_cost.items() if a == alpha)
    free = [(b, e) for b, e in arms if free_up_to is not None and b <= free_up_to]
    parts = [f"β = {beta_text(b)} {'changes the test accuracy ' if i == 0 else ''}by {brief(e)}"
             for i, (b, e) in enumerate(free)]
    if first is not None:
        parts.append(f"from β = {beta_text(first)} on, the penalty costs accuracy: "
                     f"{brief(found.penalty_cost[(alpha, first)])}")
    return "; ".join(parts)


def penalty_cost_table(found: GridFindings) -> Table:
    """What the penalty does to the test accuracy: each β > 0 against β = 0 at the same α, by seed."""
    return effects_shown(found.penalty_cost, "test accuracy minus β = 0 (points)",
                         caption="MNIST: what the penalty does to the test accuracy, paired by seed against β = 0 "
                                 "at the same α")


def distillation_gain_table(found: GridFindings) -> Table:
    """What distillation does to the test accuracy: each α > 0 against α = 0 at the same β, by seed."""
    return effects_shown(found.distillation_gain, "test accuracy minus α = 0 (points)",
                         caption="MNIST: what distillation does to the test accuracy, paired by seed against α = 0 "
                                 "at the same β")


def low_rank_table(found: GridFindings) -> Table:
    """The test accuracy with ``W₁`` truncated to ``found.low_rank``: each β > 0 against β = 0 at the same α."""
    return effects_shown(found.low_rank_gain, f"test accuracy at rank {found.low_rank} minus β = 0 (points)",
                         caption=f"MNIST: W₁ truncated to rank {found.low_rank}, paired by seed against β = 0 at "
                                 "the same α")


def penalty_cost_text(found: GridFindings) -> str:
    """Per α, what the penalty costs in test accuracy, and whether the harmless β depend on α."""
    free_up_to, first_cost = found.thresholds()
    lines = []
    for alpha in found.alphas:
        label = "without distillation" if alpha == 0 else "with distillation"
        plain = found.summary.loc[(alpha, 0.0), "test_accuracy mean"]
        text = _cost_statement(found, alpha, free_up_to[alpha], first_cost[alpha])
        lines.append(f"* **α = {alpha:g}** ({label}, {plain:.2f} % without the penalty): {text}.")
    if len(set(free_up_to.values())) > 1:
        lines.append("\nWhich β costs nothing measurable therefore depends on α: the rule decides it for each α separately.")
    else:
        lines.append("\nThe same values of β cost nothing measurable at every α.")
    return "\n".join(lines)


def first_seed_spectra(outcome: nuclear.NuclearOutcome) -> dict[str, list[float]]:
    """The singular values of ``W₁`` for the first seed of ``outcome``, keyed ``"alpha=0.5,beta=0.001"``."""
    first = outcome.config.seeds[0]
    return {f"alpha={a:g},beta={b:g}": [round(v, 5) for v in s.tolist()]
            for (seed, a, b), s in outcome.spectra.items() if seed == first}


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


def spectrum_table(found: GridFindings) -> Table:
    """Nuclear norm and energy rank of ``W₁`` per (α, β), mean ± std over seeds."""
    columns = ["nuclear_norm mean", "nuclear_norm std", "energy_rank mean", "energy_rank std"]
    return readable(settings(found.summary[columns]),
                    {**SETTINGS, "nuclear_norm": "nuclear norm of W₁", "energy_rank": "energy rank of W₁"},
                    digits=1, caption="MNIST: the first layer after training, mean ± std over seeds")


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


def chosen_rank_tables(found: GridFindings) -> tuple[Table, Table, Table]:
    """The smallest rank within tolerance on validation per (α, β), with the students' MACs and test
    accuracy dense and at that rank; then what the penalty does to that rank and to that accuracy,
    paired by seed against β = 0."""
    chosen = found.summary[["chosen_rank mean", "chosen_rank std", "chosen_macs mean", "chosen_macs std",
                            "test_accuracy mean", "test_accuracy std", "chosen_test_accuracy mean",
                            "chosen_test_accuracy std"]]
    chosen = chosen.assign(
        chosen_rank=[mean_std_text(m, s, 0) for m, s in zip(chosen["chosen_rank mean"], chosen["chosen_rank std"])],
        chosen_macs=[mean_std_text(m / 1e6, s / 1e6, 3)
                     for m, s in zip(chosen["chosen_macs mean"], chosen["chosen_macs std"])],
    ).drop(columns=["chosen_rank mean", "chosen_rank std", "chosen_macs mean", "chosen_macs std"])
    shown = settings(chosen)[["alpha", "beta", "chosen_rank", "chosen_macs", "test_accuracy mean", "test_accuracy std",
                              "chosen_test_accuracy mean", "chosen_test_accuracy std"]]
    headers = {**SETTINGS, "chosen_rank": "chosen rank", "chosen_macs": "student MACs per image (M)",
               "test_accuracy": "dense: test accuracy (%)", "chosen_test_accuracy": "at the chosen rank: test accuracy (%)"}
    against = "paired by seed against β = 0 at the same α"
    return (
        readable(shown, headers, caption="MNIST: the smallest rank within tolerance on validation, mean ± std over seeds"),
        effects_shown(found.rank_gain, "chosen rank minus β = 0 (ranks)", digits=0,
                      caption=f"MNIST: what the penalty does to the chosen rank, {against}"),
        effects_shown(found.chosen_accuracy, "test accuracy at the chosen rank minus β = 0 (points)",
                      caption=f"MNIST: test accuracy of the factorised students, {against}"),
    )


def grid_ties_text(found: GridFindings) -> str:
    """A warning where the chosen ranks differ by the same amount on every seed ("" where they never do)."""
    ties: dict[float, list[str]] = {}
    for (a, b), e in found.rank_gain.items():
        if e.std == 0:
            ties.setdefault(a, []).append(beta_text(b))
    if not ties:
        return ""
    where = "; ".join(f"α = {a:g} with β = {listing(bs)}" for a, bs in ties.items())
    return f"""The chosen ranks lie on a coarse grid, so differences can be identical on every seed
(here at {where}). A zero spread gives a zero-width
interval, and the rule then says "clears the noise" for any non-zero difference: with
{len(found.seeds)} seeds that verdict rests on the grid as much as on the seeds."""


@dataclass
class RenderLatency:
    """Latencies timed when the page is built: ``timings`` (one row per model, batch and repeat, of
    :func:`nuclear.repeated_latency`) with ``threads`` PyTorch threads, their ``summary``
    (:func:`nuclear.latency_summary`), the ``counts`` (parameters, MACs) of each model and, after
    :func:`time_threads`, ``thread_summary`` with the machine's own number of threads as well."""

    candidates: list[tuple[str, nn.Module, int | None]]
    counts: dict[str, tuple[int, int]]
    timings: pd.DataFrame
    summary: pd.DataFrame
    threads: int
    repeats: int
    default_threads: int
    ranks: tuple[int, ...]
    thread_summary: pd.DataFrame | None = None

    def per_image(self, name: str, batch: int = 256) -> pd.Series:
        """The summary row of model ``name`` at ``batch`` images (``median``, ``low``, ``high`` in ms per image)."""
        return self.summary[(self.summary.model == name) & (self.summary.batch == batch)].iloc[0]

    def small_ranks(self) -> list[int]:
        """The ranks of at most 64 (the factorised students that the prose compares with the dense one)."""
        return [r for r in self.ranks if r <= 64]

    def small(self) -> list[pd.Series]:
        """The summary rows of the students factorised at :meth:`small_ranks`, in batches of 256."""
        return [self.per_image(f"student, W₁ at rank {r}") for r in self.small_ranks()]

    def dense_default(self) -> pd.Series:
        """The dense student in batches of 256 with the machine's own number of threads."""
        if self.thread_summary is None:
            return self.per_image(_DENSE)
        rows = self.thread_summary
        return rows[(rows.model == _DENSE) & (rows.threads == self.default_threads)].iloc[0]


def time_models(ranks: tuple[int, ...], *, repeats: int, threads: int) -> RenderLatency:
    """Time the MNIST teacher, the dense student and the student with ``W₁`` at each rank, in turns,
    ``repeats`` times with ``threads`` PyTorch threads, in batches of 1 and 256 (:func:`nuclear.repeated_latency`)."""
    candidates = nuclear.cost_models(models.mnist_student, models.mnist_teacher(), ranks)
    shape = (1, 28, 28)
    counts = {name: (models.count_parameters(m), count_macs(m, shape)) for name, m, _ in candidates}
    timings = nuclear.repeated_latency(candidates, shape, repeats=repeats, threads=threads)
    return RenderLatency(candidates, counts, timings, nuclear.latency_summary(timings), threads, repeats,
                         torch.get_num_threads(), tuple(ranks))


def _timing_text(row: pd.Series) -> str:
    """``"12.3 (11.9–13.0)"``: the median and range of a latency row, in µs."""
    return f"{1000 * row['median']:.1f} ({1000 * row['low']:.1f}–{1000 * row['high']:.1f})"


def cost_table(latency: RenderLatency) -> Table:
    """Parameters, MACs and the latency of each model for one image and per image in a batch of 256."""
    rows = []
    for name, _, _ in latency.candidates:
        one, batch = latency.per_image(name, 1), latency.per_image(name, 256)
        rows.append({"model": name, "parameters": latency.counts[name][0], "MACs": latency.counts[name][1] / 1e6,
                     "batch 1": _timing_text(one), "batch 256": _timing_text(batch),
                     "spread": f"{max(one.spread, batch.spread):.0f}"})
    headers = {"MACs": "MACs per image (M)", "batch 1": "one image: µs, median (range)",
               "batch 256": "per image in a batch of 256: µs, median (range)",
               "spread": "largest spread over repeats (% of the median)"}
    threads = f"{latency.threads} thread{'s' if latency.threads > 1 else ''}"
    caption = (f"MNIST: cost per image on this machine ({provenance.device_description()}), timed with "
               f"{threads}, {latency.repeats} repeats")
    return readable(pd.DataFrame(rows), headers, digits=3, caption=caption)


def latency_text(latency: RenderLatency) -> str:
    """The dense and the factorised students' latencies, how much the repeats vary, and how steady the
    ratio of the two is within one round of timings."""
    small_ranks, small = latency.small_ranks(), latency.small()
    dense, teacher, spreads = latency.per_image(_DENSE), latency.per_image("teacher"), latency.summary.spread
    batched = latency.timings[latency.timings.batch == 256].pivot(index="repeat", columns="model", values="ms_per_image")
    ratios = batched[_DENSE] / batched[[f"student, W₁ at rank {r}" for r in small_ranks]].max(axis=1)
    ratio_spread = 100 * (ratios.max() - ratios.min()) / ratios.median()
    steadier = ("steadier than the times themselves" if ratio_spread < dense["spread"]
                else "not steadier than the times themselves here")
    return f"""With one thread, in batches of 256, the dense student took {1000 * dense['median']:.1f} µs per image
(repeats from {1000 * dense['low']:.1f} to {1000 * dense['high']:.1f} µs), the students with $W_1$ at
ranks {small_ranks[0]} to {small_ranks[-1]} {1000 * min(r['median'] for r in small):.1f} to
{1000 * max(r['median'] for r in small):.1f} µs, and the teacher {1000 * teacher['median']:.0f} µs. Within this
one process the repeats of one model differ by {spreads.median():.0f} % of their median in a typical case and
by up to {spreads.max():.0f} % (the range of the repeats over their median). Within one round, the dense student
took {ratios.median():.2f} times as long as the slowest of those factorised students (range over the rounds
{ratios.min():.2f} to {ratios.max():.2f}, a spread of {ratio_spread:.0f} % against {dense['spread']:.0f} % for the
dense student's own times): a ratio taken within one round is {steadier}."""


def time_threads(latency: RenderLatency, rank: int) -> Table | str:
    """Time the dense student and the one with ``W₁`` at ``rank`` again with all of PyTorch's threads
    (batches of 256), keep both timings in ``latency.thread_summary`` and return them as a table;
    a sentence instead where PyTorch uses as many threads as the first timings."""
    if latency.default_threads == latency.threads:
        threads = latency.default_threads
        return f"PyTorch uses {threads} thread{'s' if threads > 1 else ''} here, as above: nothing to compare."
    names = (_DENSE, f"student, W₁ at rank {rank}")
    chosen = [c for c in latency.candidates if c[0] in names]
    again = nuclear.repeated_latency(chosen, (1, 28, 28), repeats=latency.repeats, batch_sizes=(256,))
    first = latency.timings[(latency.timings.batch == 256) & latency.timings.model.isin(names)]
    latency.thread_summary = nuclear.latency_summary(pd.concat([first, again]))
    rows = latency.thread_summary
    return readable(rows.assign(timing=rows.apply(_timing_text, axis=1))[["model", "threads", "timing"]],
                    {"timing": "per image in a batch of 256: µs, median (range)"},
                    caption=f"MNIST: the number of PyTorch threads, {latency.repeats} repeats each")


def _apart(values: list[float]) -> str:
    """How much the slowest of ``values`` exceeds the fastest, in words."""
    factor = max(values) / min(values)
    return f"{100 * (factor - 1):.0f} % slower than" if factor < 2 else f"{factor:.1f} times as slow as"


def _recordings(profile: str, live_cost: pd.DataFrame) -> dict[str, float]:
    """The dense student's recorded latencies in batches of 256 (µs per image): this chapter's study
    (the live run in the full profile) and, when recorded, the distillation chapter's."""
    if findings.uses_recorded(profile):
        study = pd.DataFrame(findings.recorded(NAME)["results"]["tables"][COST_TABLE]).set_index("model")
        label = "this chapter's recorded run of the study"
    else:
        study, label = live_cost, "this run of the study"
    recordings = {label: 1000 * study.loc[_DENSE, "latency_ms_per_image_batch256"]}
    try:  # the same dense student, timed in the recorded run of the distillation chapter
        table = findings.recorded("mnist_distillation")["results"]["tables"]["Cost per image"]
        other = pd.DataFrame(table).set_index("model")
        recordings["the recorded run of the distillation chapter"] = (
            1000 * other.loc["student (MLP)", "latency_ms_per_sample_batched"])
    except (FileNotFoundError, KeyError):
        pass
    return recordings


def recordings_text(latency: RenderLatency, profile: str, live_cost: pd.DataFrame) -> str:
    """The dense student's recorded latencies beside the one timed for this page, and what makes such
    timings differ (``live_cost``: the study's own cost table, indexed by model)."""
    recordings = _recordings(profile, live_cost)
    # the recordings timed the students with all the machine's threads: compare with the same here
    dense_default, threads = latency.dense_default(), latency.default_threads
    here_now = 1000 * dense_default["median"]
    here_label = f"{threads} thread{'s' if threads > 1 else ''}, as in the recordings"
    text = " and ".join(f"{v:.1f} µs in {k}" for k, v in recordings.items())
    if len(recordings) > 1:
        text += f": the slower recording is {_apart(list(recordings.values()))} the faster"
    thread_text = ""
    if latency.thread_summary is not None:
        dense_now = latency.per_image(_DENSE)
        thread_text = (f" With {threads} threads instead of {latency.threads}, the dense student took "
                       f"{here_now:.1f} µs per image instead of {1000 * dense_now['median']:.1f} µs.")
        if dense_default["median"] > dense_now["median"]:
            thread_text += (" More threads were slower here: on a busy machine the threads of one matrix product wait "
                            "for each other and for the cores that other processes hold.")
    return f"""The same dense student, in batches of 256, timed once in each run of a study: {text}. Timed
again for this page ({here_label}, median of {latency.repeats} repeats), it took {here_now:.1f} µs, which is
{_apart([here_now, *recordings.values()])} the fastest of these timings.{thread_text} What changes between such timings is

* **the machine**: the CPU model, its caches and vector units, and how many cores the process gets;
* **the load**: other processes on a shared machine take cores and memory bandwidth, and the load of a
  busy machine can change within seconds; a recording does not say what else was running when it was made;
* **the threads**: PyTorch splits the matrix products of a batch over its threads, so a batch of 256
  depends on their number far more than a single image, whose time is mostly the fixed overhead of
  each call.

So compare latencies only within one table, measured in one process, and read the ratios between
models rather than the times; never compare them across runs, chapters or machines."""


def eurosat_tables(outcome: nuclear.NuclearOutcome) -> list[Table]:
    """The EuroSAT part: its teachers, its students and, with two or more seeds (one seed allows no
    paired comparison), what the penalty does to their test accuracy and chosen rank, paired by seed
    against β = 0."""
    teachers = outcome.teachers.agg(["mean", "std"])
    teacher_row = {f"{m} {s}": teachers.loc[s, m] for m in ("accuracy", "f1") for s in ("mean", "std")}
    summary = nuclear.arm_summary(outcome.runs)
    kept = [c for c in summary.columns if c.split()[0] in ("test_accuracy", "f1", "chosen_rank", "energy_rank")]
    shown = [
        readable(pd.DataFrame([teacher_row]), {"accuracy": "test accuracy (%)", "f1": "F1 (%)"}, scale=100,
                 caption="EuroSAT: the ResNet-18 teachers, mean ± std over seeds"),
        readable(settings(summary[kept]),
                 {**METRIC_HEADERS, "chosen_rank": "chosen rank", "energy_rank": "energy rank of W₁"},
                 caption="EuroSAT: the students, mean ± std over seeds"),
    ]
    if len(outcome.config.seeds) < 2:
        return shown
    ranks = nuclear.effects_against_unpenalised(outcome.runs, "chosen_rank", scale=1, unit="ranks")
    return [
        *shown,
        effects_shown(nuclear.effects_against_unpenalised(outcome.runs), "test accuracy minus β = 0 (points)",
                      caption="EuroSAT: what the penalty does to the test accuracy, paired by seed against β = 0"),
        effects_shown(ranks, "chosen rank minus β = 0 (ranks)", digits=0,
                      caption="EuroSAT: what the penalty does to the chosen rank, paired by seed against β = 0"),
    ]


def _headline(found: GridFindings, dense_macs: int) -> str:
    """The chapter's summary line for one run (``found`` built from the run's own rows)."""
    alpha = 0.5 if 0.5 in found.alphas else found.alphas[-1]
    unpenalised, strongest = (alpha, 0.0), (alpha, max(found.betas))
    macs = found.summary.loc[strongest, "chosen_macs mean"] / 1e6
    ms = found.mean_std
    return (
        f"MNIST, α = {alpha:g}: without the penalty {ms(unpenalised, 'test_accuracy')} % "
        f"(F1 {ms(unpenalised, 'f1')}), chosen rank {ms(unpenalised, 'chosen_rank', 0)}; "
        f"β = {max(found.betas):g}: {ms(strongest, 'test_accuracy')} % "
        f"(against β = 0: {found.penalty_cost[strongest].describe()}), "
        f"chosen rank {ms(strongest, 'chosen_rank', 0)} at {ms(strongest, 'chosen_test_accuracy')} % "
        f"and {macs:.3f} M MACs per image (dense student {dense_macs / 1e6:.3f} M). "
        f"Test accuracy, mean ± std over seeds {list(found.seeds)}."
    )


def _compact(effect_table: pd.DataFrame) -> pd.DataFrame:
    """An effect table with the columns a reader of the appendix needs (the full fields go to "effects")."""
    return effect_table[["mean", "std", "low", "high", "p_value", "verdict"]].rename(
        columns={"low": "95 % interval from", "high": "95 % interval to", "p_value": "p (paired t)"})


def result_record(outcome: nuclear.NuclearOutcome, latency: RenderLatency,
                  eurosat: nuclear.NuclearOutcome | None = None) -> tuple[dict[str, Any], str]:
    """What the chapter saves of a run (``outcome``, the latencies of this page and the EuroSAT
    outcome if it ran), and the run's summary line."""
    config = outcome.config
    live = GridFindings(outcome.runs, outcome.truncation, vars(config))
    text = _headline(live, latency.counts[_DENSE][1])
    low_rank = outcome.truncation[outcome.truncation["rank"] == live.low_rank]
    effects = {
        "penalty_cost": nuclear.effect_table(live.penalty_cost),
        "distillation_gain": nuclear.effect_table(live.distillation_gain),
        "chosen_rank": nuclear.effect_table(live.rank_gain),
        "chosen_test_accuracy": nuclear.effect_table(live.chosen_accuracy),
        f"test_accuracy_at_rank_{live.low_rank}": nuclear.effect_table(nuclear.effects_against_unpenalised(low_rank)),
    }
    spectrum = ["nuclear_norm mean", "energy_rank mean", "energy_rank std", "chosen_rank mean", "chosen_rank std",
                "chosen_test_accuracy mean", "chosen_test_accuracy std", "chosen_macs mean"]
    tables = {
        "MNIST: accuracy, precision, recall, F1 (%)": json_records(live.summary[METRICS].round(3)),
        "MNIST: minus the unpenalised student (points)": json_records(_compact(effects["penalty_cost"])),
        "MNIST: spectrum and chosen rank": json_records(live.summary[spectrum].round(3)),
        COST_TABLE: json_records(outcome.cost.set_index("model").round(5)),
        "MNIST: latency over repeats, one thread, at render time (ms per image)": json_records(latency.summary, digits=5),
    }
    if latency.thread_summary is not None:
        tables["MNIST: latency with one thread and with all, at render time (ms per image)"] = json_records(
            latency.thread_summary, digits=5)
    extra: dict[str, Any] = {"eurosat": "not run"}
    if eurosat is not None:
        tables["EuroSAT: accuracy, F1 and chosen rank (%)"] = json_records(nuclear.arm_summary(eurosat.runs).round(3))
        if len(eurosat.config.seeds) > 1:
            tables["EuroSAT: minus the unpenalised student (points)"] = json_records(
                _compact(nuclear.paired_against_unpenalised(eurosat.runs)))
        extra = {"eurosat_runs": json_records(eurosat.runs)}
    record = {
        "summary": text, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "tables": tables, "runs": json_records(outcome.runs), "truncation": json_records(outcome.truncation),
        "spectra_seed0": first_seed_spectra(outcome), "train_seconds": round(outcome.train_seconds, 1),
        "effects": {k: json_records(v) for k, v in effects.items()},
        "latency_device": provenance.device_description(), **extra,
    }
    return record, text


def _penalty_conclusion(found: GridFindings) -> tuple[str, str]:
    """The first conclusion (whether a small penalty costs accuracy, per α), and the phrase naming the
    β that cost nothing measurable, which the closing paragraph repeats."""
    free_up_to, first_cost = found.thresholds()
    groups: dict[float | None, list[float]] = {}
    for alpha in found.alphas:
        groups.setdefault(free_up_to[alpha], []).append(alpha)
    ordered = sorted(groups.items(), key=lambda item: -1 if item[0] is None else item[0], reverse=True)
    parts = [(f"up to β = {beta_text(b)}" if b is not None else "for no β") + " at α = "
             + listing([f"{x:g}" for x in alphas]) for b, alphas in ordered]
    free_text = parts[0] + "".join(", but only " + part for part in parts[1:])
    sooner = ""
    if 0.0 in found.alphas and first_cost[0.0] is not None and len(groups) > 1 and free_up_to[0.0] == ordered[-1][0]:
        sooner = (f" Without distillation the penalty costs accuracy sooner: at α = 0, β = {beta_text(first_cost[0.0])} "
                  f"already changes the test accuracy by {brief(found.penalty_cost[(0.0, first_cost[0.0])])}.")
    b_max = max(found.betas)
    strongest = listing([f"at α = {alpha:g} by {brief(found.penalty_cost[(alpha, b_max)])}" for alpha in found.alphas])
    suggestive = [(k, e) for k, e in found.penalty_cost.items() if e.verdict == "suggestive"]
    suggestive_text = ""
    if suggestive:
        suggestive_text = (" One difference is only suggestive, a possible effect worth more seeds rather than a finding: "
                           if len(suggestive) == 1 else " Some differences are only suggestive, possible effects worth "
                           "more seeds rather than findings: ")
        suggestive_text += listing([f"at α = {k[0]:g}, β = {beta_text(k[1])}, {brief(e)}" for k, e in suggestive]) + "."
    text = f"""**Whether a small penalty costs accuracy depends on α.** By the course's rule, no cost clears the noise
  {free_text}.{sooner} The strongest penalty, β = {beta_text(b_max)}, changes it {strongest}.{suggestive_text}"""
    return text, free_text


def _distillation_conclusion(found: GridFindings) -> str:
    """The second conclusion: distillation against α = 0 at every β, and whether the penalty hurts the
    student without distillation more than the one with it."""
    a, b_max, gains = found.alpha_shown, max(found.betas), list(found.distillation_gain.values())
    all_clear = all(e.clears_noise and e.mean > 0 for e in gains)
    text = f"""**Distillation {"helps at every β" if all_clear else "helps at most β"}.** Against α = 0 at the same β,
  {sum(e.clears_noise and e.mean > 0 for e in gains)} of the {len(gains)} differences are gains that clear the
  noise, from {signed(min(e.mean for e in gains))} to {signed(max(e.mean for e in gains))} points; at β = 0,
  α = {a:g} gains {brief(found.distillation_gain[(a, 0.0)])}."""
    if not (b_max > 0 and (a, b_max) in found.distillation_gain):
        return text
    runs = found.runs

    def seed_gain(beta: float) -> pd.Series:
        def pick(alpha: float) -> pd.Series:
            return runs[(runs.alpha == alpha) & (runs.beta == beta)].set_index("seed").test_accuracy
        return pick(a) - pick(0.0)

    growth = paired_effect(seed_gain(b_max), seed_gain(0.0))
    hurts = ("hurts the student without distillation more than the one with it"
             if growth.clears_noise and growth.mean > 0
             else "may hurt the student without distillation more, but that is not established")
    return text + f""" The gain at β = {beta_text(b_max)} minus the gain
  at β = 0, per seed, is {brief(growth)}: the penalty {hurts}."""


def _rank_conclusions(found: GridFindings, dense_macs: int) -> str:
    """The third and fourth conclusions: what the penalty does to the spectrum, and to the chosen rank
    and the MACs of the truncated student."""
    a, b_mid, summary, runs = found.alpha_shown, found.middle_beta, found.summary, found.runs
    unpenalised, penalised = (a, 0.0), (a, b_mid)
    energy = nuclear.effects_against_unpenalised(runs, "energy_rank", scale=1, unit="singular values")[penalised]
    macs_plain, macs_penalised = summary.loc[unpenalised, "chosen_macs mean"], summary.loc[penalised, "chosen_macs mean"]

    def arm(key: tuple[float, float]) -> pd.DataFrame:
        return runs[(runs.alpha == key[0]) & (runs.beta == key[1])].set_index("seed")

    cut = {key: paired_effect(arm(key).chosen_test_accuracy, arm(key).test_accuracy) for key in (unpenalised, penalised)}
    rank_verdict = ("" if found.rank_gain[penalised].clears_noise else
                    " The unpenalised rank varies too much between seeds for so few seeds to pin the reduction down.")
    other_alphas = [x for x in found.alphas if x not in (0.0, a)]
    rank_other = listing([
        f"at α = {x:g} by {brief(found.rank_gain[(x, b_mid)], 0)}"
        + (" (a tie on the grid of ranks, as above)" if found.rank_gain[(x, b_mid)].std == 0 else "")
        for x in other_alphas if (x, b_mid) in found.rank_gain])
    rank_other = f" The same β changes it {rank_other}." if rank_other else ""
    ms = found.mean_std
    return f"""**The spectrum collapses.** β = {beta_text(b_mid)} cuts the nuclear norm of $W_1$ from
  {summary.loc[unpenalised, 'nuclear_norm mean']:.0f} to {summary.loc[penalised, 'nuclear_norm mean']:.0f} and the
  number of singular values that hold 99 % of its energy from {summary.loc[unpenalised, 'energy_rank mean']:.0f}
  to {summary.loc[penalised, 'energy_rank mean']:.0f}, a paired change of {brief(energy, 0)}; the test accuracy
  meanwhile changes by {brief(found.penalty_cost[penalised])}.
* **But the unpenalised layer was already nearly low rank where it matters.** MNIST digits occupy a small
  subspace of the 784 pixels, so even the unpenalised $W_1$ can be cut to rank
  {ms(unpenalised, 'chosen_rank', 0)} (per seed {found.per_seed(unpenalised, 'chosen_rank')}) at
  {ms(unpenalised, 'chosen_test_accuracy')} % test accuracy; against the dense student that is a
  change of {brief(cut[unpenalised])}. With β = {beta_text(b_mid)} the chosen ranks are {found.per_seed(penalised, 'chosen_rank')}, at
  {ms(penalised, 'chosen_test_accuracy')} %. Paired by seed, the penalty changes the chosen rank by
  {brief(found.rank_gain[penalised], 0)}.{rank_verdict}{rank_other}
  In MACs per image, the dense student costs {dense_macs / 1e6:.2f} M, the truncated unpenalised one
  {macs_plain / 1e6:.2f} M, the truncated penalised one {macs_penalised / 1e6:.2f} M: truncation alone saves
  {100 * (1 - macs_plain / dense_macs):.0f} %, the penalty another {100 * (macs_plain - macs_penalised) / dense_macs:.0f} %
  of the dense cost."""


def _cost_conclusions(found: GridFindings, latency: RenderLatency) -> str:
    """The fifth and sixth conclusions: why the saving is small (the second layer), with this page's
    latencies, and what happens at a very low rank."""
    a, b_mid, low_rank = found.alpha_shown, found.middle_beta, found.low_rank
    penalised, curve = (a, b_mid), found.curve()
    dense, small, teacher = latency.per_image(_DENSE), latency.small(), latency.per_image("teacher")
    small_ranks = latency.small_ranks()
    second_layer = 784 * 784
    latency_agrees = (", and the measured latency agrees" if dense["median"] > max(r["median"] for r in small)
                      else "; the latency measured for this page does not show it clearly")
    low_gain = found.low_rank_gain[penalised]
    title = ("Where the penalty does change the picture: at very low ranks the penalised layers degrade far "
             "more gracefully." if low_gain.clears_noise and low_gain.mean > 0
             else "At very low ranks the penalty may help, but the difference is not established.")
    at_low_rank = listing([f"{curve.loc[(beta, low_rank), 'mean']:.1f} % at β = {beta_text(beta)}"
                           for beta in found.betas])
    return f"""**Why so little: the rest of the network.** After factorising, the second 784 × 784 layer
  ({second_layer / 1e6:.2f} M MACs) dominates the student{latency_agrees}. In batches of 256, with one thread, the
  dense student took {1000 * dense['median']:.1f} µs per image, the factorised students at ranks
  {small_ranks[0]} to {small_ranks[-1]} {1000 * min(r['median'] for r in small):.1f} to
  {1000 * max(r['median'] for r in small):.1f} µs, and the teacher {1000 * teacher['median']:.0f} µs (medians of
  {latency.repeats} repeats, timed when this page was built; only the ratios within that table carry over to
  another machine). Penalising and
  factorising every hidden layer, not only the first, is the natural next experiment.
* **{title}** At rank {low_rank}, {at_low_rank}
  (α = {a:g}); against β = 0, β = {beta_text(b_mid)} gains {brief(low_gain)}. A budget that forced a
  rank of about {low_rank} would favour the penalty. No such budget makes sense for this student, because the
  second layer costs far more than the first."""


def conclusions(found: GridFindings, latency: RenderLatency, profile: str) -> str:
    """What the chapter learned from the MNIST grid, as a list of claims with their paired effects."""
    dense_macs = latency.counts[_DENSE][1]
    penalty, free_text = _penalty_conclusion(found)
    recorded = "recorded " if findings.uses_recorded(profile) else ""
    return f"""In the {recorded}MNIST run ({len(found.seeds)} seeds; the appendix has the provenance), with
distillation at α = {found.alpha_shown:g} unless said otherwise:

* {penalty}
* {_distillation_conclusion(found)}
* {_rank_conclusions(found, dense_macs)}
* {_cost_conclusions(found, latency)}

Against {{ref}}`the nuclear-norm slides <source-nuclear-slides>`: their inference times compare teacher and
student, two different architectures, and the penalty cannot change a network's cost unless the layer is
factorised afterwards. Here the penalty keeps its promise of a low-rank layer, at no cost in accuracy that
clears the noise {free_text}. But on MNIST with this student the saving it adds over plain truncation is small.
Two extensions are left open: a proximal (singular-value thresholding) update, which makes small singular
values exactly zero instead of small, and the EuroSAT run, which needs the data set and is best done on a
GPU."""


def tolerance_text(config: dict[str, Any]) -> str:
    """The tolerance that chooses a rank, and the ranks it chooses from."""
    ranks = ", ".join(str(r) for r in config["ranks"])
    return f"""The tolerance is {config["rank_tolerance"]:g} points of validation accuracy, and the ranks
tried are {ranks}: a chosen rank is always one of these."""


def eurosat_skipped_text(profile: str) -> str:
    """Why the EuroSAT part did not run, and (in a smoke build) whether the recorded run has it."""
    text = "EuroSAT part not run in this profile (set EUROSAT = True to run it)."
    if findings.uses_recorded(profile) and findings.recorded(NAME)["results"].get("eurosat") == "not run":
        text += "\nThe recorded full-profile run did not run it either, so there are no EuroSAT findings to show."
    return text
