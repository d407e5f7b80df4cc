"""What the nuclear-norm chapter records of a run: its result file (tables, rows, spectra, paired
effects and the latency device) and its summary line."""

from __future__ import annotations

from typing import Any

import pandas as pd

from kdcourse import provenance
from kdcourse.studies import nuclear
from kdcourse.studies.common import json_records
from kdcourse.studies.nuclear_costs import COST_TABLE, DENSE, RenderLatency
from kdcourse.studies.nuclear_findings import METRICS, GridFindings, first_seed_spectra

__all__ = ["result_record"]


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
    text = _headline(live, latency.counts[DENSE][1])
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
