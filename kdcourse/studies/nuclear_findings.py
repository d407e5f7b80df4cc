"""The tables and sentences of the nuclear-norm chapter about its MNIST grid and its EuroSAT part.

:class:`GridFindings` holds what the chapter discusses (the runs and truncations of
:func:`kdcourse.studies.nuclear.run_study`, live in the full profile, recorded in a smoke build) with
the paired effects computed once; the functions below turn them into tables and prose. Accuracies in
the frames are fractions; tables and sentences speak in percent and in points. The figures are in
:mod:`kdcourse.studies.nuclear_figures`, the latencies timed when the page is built in
:mod:`kdcourse.studies.nuclear_costs`, the result file in :mod:`kdcourse.studies.nuclear_record` and
the conclusions in :mod:`kdcourse.studies.nuclear_lessons`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from kdcourse.course import findings
from kdcourse.course.findings import listing
from kdcourse.course.tables import Table, mean_std_text, readable
from kdcourse.stats import Effect, signed
from kdcourse.studies import nuclear

__all__ = [
    "NAME", "SETTINGS", "METRICS", "METRIC_HEADERS", "METRICS_CAPTION", "beta_text", "settings", "brief",
    "effects_shown", "GridFindings", "grid_text", "metrics_table", "metrics_gap_text", "penalty_cost_table",
    "penalty_cost_text", "distillation_gain_table", "low_rank_table", "tolerance_text", "eurosat_skipped_text",
    "first_seed_spectra", "spectrum_table", "chosen_rank_tables", "grid_ties_text", "eurosat_tables",
]

NAME = "nuclear_norm"  # the chapter, and its result files
SETTINGS = {"alpha": "α", "beta": "β"}
METRICS = [f"{m} {s}" for m in ("test_accuracy", "precision", "recall", "f1") for s in ("mean", "std")]
METRIC_HEADERS = {**SETTINGS, "test_accuracy": "test accuracy (%)", "precision": "precision (%)",
                  "recall": "recall (%)", "f1": "F1 (%)"}
METRICS_CAPTION = "MNIST: test accuracy, precision, recall and F1 (%), mean ± std over seeds"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


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


def spectrum_table(found: GridFindings) -> Table:
    """Nuclear norm and energy rank of ``W₁`` per (α, β), mean ± std over seeds."""
    columns = ["nuclear_norm mean", "nuclear_norm std", "energy_rank mean", "energy_rank std"]
    return readable(settings(found.summary[columns]),
                    {**SETTINGS, "nuclear_norm": "nuclear norm of W₁", "energy_rank": "energy rank of W₁"},
                    digits=1, caption="MNIST: the first layer after training, mean ± std over seeds")


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
