"""What the nuclear-norm chapter learned from its MNIST grid: its closing list of claims, each with
its paired effect, from a :class:`kdcourse.studies.nuclear_findings.GridFindings` and the latencies
timed for the page (:class:`kdcourse.studies.nuclear_costs.RenderLatency`)."""

from __future__ import annotations

import pandas as pd

from kdcourse.course import findings
from kdcourse.course.findings import listing
from kdcourse.stats import paired_effect, signed
from kdcourse.studies import nuclear
from kdcourse.studies.nuclear_costs import DENSE, RenderLatency
from kdcourse.studies.nuclear_findings import GridFindings, beta_text, brief

__all__ = ["conclusions"]


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
    dense, small, teacher = latency.per_image(DENSE), latency.small(), latency.per_image("teacher")
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
    dense_macs = latency.counts[DENSE][1]
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
