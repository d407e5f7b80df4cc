"""The nuclear-norm study end to end on a tiny generated MNIST and a tiny EuroSAT folder; the lazy penalty."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kdcourse.data import load_eurosat, load_mnist
from kdcourse.lowrank import NuclearPenalty, nuclear_norm
from kdcourse.models import mlp
from kdcourse.studies import mnist_teacher, nuclear
from kdcourse.studies import nuclear_costs as cost_report
from kdcourse.studies import nuclear_findings as report
from kdcourse.studies import nuclear_lessons as lessons
from kdcourse.studies import nuclear_record
from test_eurosat import write_eurosat

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def mnist_outcome(tmp_path_factory: pytest.TempPathFactory, mnist_files) -> dict:
    root = mnist_files.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)
    dataset = load_mnist(root, val_size=50, download=False)
    config = nuclear.config_for("smoke", seeds=SEEDS, betas=(0.0, 0.05), ranks=(4, 16, 784), rank_tolerance=100.0, mixed_precision=False)
    runs_root = tmp_path_factory.mktemp("runs")
    teacher = mnist_teacher.config_for("smoke", val_size=50, mixed_precision=False, run_root=runs_root)
    first = nuclear.run_study(config, nuclear.mnist_task(dataset, teacher), run_root=runs_root)
    second = nuclear.run_study(config, nuclear.mnist_task(dataset, teacher), run_root=runs_root)
    return {"first": first, "second": second, "config": config}


def test_one_student_per_seed_alpha_beta(mnist_outcome) -> None:
    runs = mnist_outcome["first"].runs
    assert len(runs) == len(SEEDS) * 2 * 2
    assert runs.groupby(["alpha", "beta"]).seed.apply(sorted).tolist() == [list(SEEDS)] * 4
    assert runs[["test_accuracy", "precision", "recall", "f1"]].stack().between(0, 1).all()


def test_truncation_at_full_rank_reproduces_the_dense_student(mnist_outcome) -> None:
    outcome = mnist_outcome["first"]
    full = outcome.truncation[outcome.truncation["rank"] == 784].set_index(["seed", "alpha", "beta"]).test_accuracy
    dense = outcome.runs.set_index(["seed", "alpha", "beta"]).test_accuracy
    pd.testing.assert_series_equal(full.sort_index(), dense.sort_index(), check_names=False, atol=0.011)


def test_chosen_rank_is_the_smallest_within_tolerance(mnist_outcome) -> None:
    # a tolerance of 100 points accepts any rank: the smallest one is chosen
    assert mnist_outcome["first"].runs.chosen_rank.eq(4).all()


def test_spectra_are_descending_and_sum_to_the_nuclear_norm(mnist_outcome) -> None:
    outcome = mnist_outcome["first"]
    for (seed, alpha, beta), spectrum in outcome.spectra.items():
        assert (spectrum.diff() <= 1e-5).all()
        row = outcome.runs[(outcome.runs.seed == seed) & (outcome.runs.alpha == alpha) & (outcome.runs.beta == beta)].iloc[0]
        assert spectrum.sum().item() == pytest.approx(row.nuclear_norm, rel=1e-4)


def test_cost_table_has_fewer_macs_at_low_rank(mnist_outcome) -> None:
    cost = mnist_outcome["first"].cost.set_index("model")
    assert cost.loc["student, W₁ at rank 4", "macs"] < cost.loc["student (dense)", "macs"] < cost.loc["student, W₁ at rank 784", "macs"]
    assert (cost.latency_ms_batch1 > 0).all()


def test_rerun_resumes_with_identical_results(mnist_outcome) -> None:
    pd.testing.assert_frame_equal(mnist_outcome["first"].runs.drop(columns="seconds"), mnist_outcome["second"].runs.drop(columns="seconds"))


def test_energy_rank() -> None:
    assert nuclear.energy_rank(torch.tensor([3.0, 4.0, 0.0])) == 2
    assert nuclear.energy_rank(torch.tensor([10.0, 1.0, 0.1]), energy=0.9) == 1
    with pytest.raises(ValueError, match="energy"):
        nuclear.energy_rank(torch.ones(3), energy=0)


def test_lazy_penalty_is_added_every_k_calls_with_weight_k_beta() -> None:
    torch.manual_seed(0)
    model = mlp([5], in_features=6, num_classes=3)
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    base = F.cross_entropy(logits, y)
    loss_fn = NuclearPenalty(lambda s, t: F.cross_entropy(s, t), model, beta=0.1, every=3)
    penalty = 3 * 0.1 * nuclear_norm(model[1].weight.detach())
    values = [loss_fn(logits, y).item() for _ in range(7)]
    expected = [(base + penalty).item() if call % 3 == 0 else base.item() for call in range(7)]
    assert values == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("every", [0, -2, 1.5, True])
def test_lazy_penalty_rejects_bad_intervals(every) -> None:
    with pytest.raises(ValueError, match="every"):
        NuclearPenalty(F.cross_entropy, mlp([4], in_features=6, num_classes=2), 0.1, every=every)


def test_bad_configuration_raises(tmp_path) -> None:
    task = nuclear.NuclearTask("toy", None, lambda: mlp([8], in_features=6, num_classes=2), None, (6,))
    with pytest.raises(ValueError, match="include 0"):
        nuclear.run_study(nuclear.config_for("smoke", betas=(1e-3,)), task, run_root=tmp_path)
    with pytest.raises(ValueError, match="ranks"):
        nuclear.run_study(nuclear.config_for("smoke", ranks=(7,)), task, run_root=tmp_path)
    with pytest.raises(ValueError, match="dataset"):
        nuclear.config_for("smoke", "cifar")


def test_eurosat_task_runs_on_a_small_folder(tmp_path) -> None:
    data = load_eurosat(write_eurosat(tmp_path / "data", per_class=4), val_size=8, test_size=8, download=False)
    config = nuclear.config_for("smoke", "eurosat", ranks=(2, 4), mixed_precision=False)
    outcome = nuclear.run_study(config, nuclear.eurosat_task(config, data), run_root=tmp_path / "runs")
    assert len(outcome.runs) == 4 and outcome.task == "EuroSAT"
    assert outcome.teachers.accuracy.between(0, 1).all()
    assert set(outcome.cost.model) >= {"teacher", "student (dense)", "student, W₁ at rank 2"}


def test_paired_against_unpenalised(mnist_outcome) -> None:
    runs = mnist_outcome["first"].runs
    paired = nuclear.paired_against_unpenalised(runs)
    assert list(paired.index) == [(0.0, 0.05), (0.5, 0.05)]
    a = runs[(runs.alpha == 0.5) & (runs.beta == 0.05)].set_index("seed").test_accuracy
    b = runs[(runs.alpha == 0.5) & (runs.beta == 0.0)].set_index("seed").test_accuracy
    assert paired.loc[(0.5, 0.05), "mean"] == pytest.approx(((a - b) * 100).mean())
    assert paired.loc[(0.5, 0.05), "verdict"] in ("clears the noise", "suggestive", "within noise")
    assert paired.loc[(0.5, 0.05), "low"] <= paired.loc[(0.5, 0.05), "mean"] <= paired.loc[(0.5, 0.05), "high"]


def test_effects_against_undistilled_pair_each_alpha_with_alpha_zero(mnist_outcome) -> None:
    runs = mnist_outcome["first"].runs
    effects = nuclear.effects_against_undistilled(runs)
    assert sorted(effects) == [(0.5, 0.0), (0.5, 0.05)]
    a = runs[(runs.alpha == 0.5) & (runs.beta == 0.05)].set_index("seed").test_accuracy
    b = runs[(runs.alpha == 0.0) & (runs.beta == 0.05)].set_index("seed").test_accuracy
    assert effects[(0.5, 0.05)].mean == pytest.approx(((a - b) * 100).mean())
    ranks = nuclear.effects_against_unpenalised(runs, "chosen_rank", scale=1, unit="ranks")
    assert ranks[(0.5, 0.05)].unit == "ranks" and ranks[(0.5, 0.05)].mean == 0  # every chosen rank is 4 (see above)
    assert list(nuclear.effect_table(ranks).index.names) == ["alpha", "beta"]


def test_repeated_latency_times_every_model_in_turns() -> None:
    candidates = nuclear.cost_models(lambda: mlp([16], in_features=12), mlp([8], in_features=12), (2, 4))
    assert [(name, rank) for name, _, rank in candidates] == [
        ("teacher", None), ("student (dense)", None), ("student, W₁ at rank 2", 2), ("student, W₁ at rank 4", 4)]
    threads = torch.get_num_threads()
    timings = nuclear.repeated_latency(candidates, (12,), repeats=3, batch_sizes=(1, 8), threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert len(timings) == 4 * 2 * 3 and (timings.ms_per_image > 0).all() and set(timings.threads) == {1}
    summary = nuclear.latency_summary(timings)
    assert list(summary.model) == [name for name, _, _ in candidates for _ in (1, 8)]
    assert (summary.low <= summary["median"]).all() and (summary["median"] <= summary.high).all()
    assert (summary.repeats == 3).all() and (summary.spread >= 0).all()
    with pytest.raises(ValueError, match="repeats"):
        nuclear.repeated_latency(candidates, (12,), repeats=0)


# --- the chapter's tables and sentences (kdcourse.studies.nuclear_findings, _costs, _lessons, _record), on the recorded run ---

RECORDED_RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"


@pytest.fixture(scope="module")
def recorded_grid() -> report.GridFindings:
    results = json.loads((RECORDED_RESULTS / "full" / "nuclear_norm.json").read_text())["results"]
    runs = pd.DataFrame(results["runs"]).drop(columns="index").set_index(["seed", "alpha", "beta"]).reset_index()
    truncation = pd.DataFrame(results["truncation"]).drop(columns="index")
    return report.GridFindings(runs, truncation, results["config"])


def fake_latency(ranks: tuple[int, ...], *, default_threads: int = 1) -> cost_report.RenderLatency:
    """Timings made up so that the dense student is the slowest student: 1 ms per image, rank r r/256 ms."""
    names = [("teacher", None), ("student (dense)", None), *((f"student, W₁ at rank {r}", r) for r in ranks)]
    candidates = [(name, torch.nn.Identity(), rank) for name, rank in names]
    times = {name: 5.0 if name == "teacher" else 1.0 if rank is None else rank / 256 for name, _, rank in candidates}
    timings = pd.DataFrame([{"model": name, "rank": rank, "threads": 1, "batch": batch, "repeat": repeat,
                             "ms_per_image": times[name] * (1 + 0.01 * repeat)}
                            for repeat in range(3) for name, _, rank in candidates for batch in (1, 256)])
    counts = {name: (1, 1_000_000) for name, _, _ in candidates}
    return cost_report.RenderLatency(candidates, counts, timings, nuclear.latency_summary(timings), 1, 3,
                                     default_threads, ranks)


def test_beta_is_written_as_a_power_of_ten() -> None:
    assert [report.beta_text(b) for b in (0.0, 3e-4, 1e-3, 1e-2, 0.05, 0.25)] == [
        "0", "3·10⁻⁴", "10⁻³", "10⁻²", "5·10⁻²", "0.25"]


def test_the_grid_findings_pair_each_arm_with_its_control(recorded_grid) -> None:
    found = recorded_grid
    assert (found.alpha_shown, found.low_rank, found.middle_beta) == (0.5, 16, 1e-3)
    runs = found.runs
    arm = runs[(runs.alpha == 0.5) & (runs.beta == 1e-2)].set_index("seed").test_accuracy
    plain = runs[(runs.alpha == 0.5) & (runs.beta == 0.0)].set_index("seed").test_accuracy
    assert found.penalty_cost[(0.5, 1e-2)].mean == pytest.approx(100 * (arm - plain).mean())
    free_up_to, first_cost = found.thresholds()
    for alpha in found.alphas:
        costly = [b for (a, b), e in found.penalty_cost.items() if a == alpha and e.clears_noise and e.mean < 0]
        assert first_cost[alpha] == (min(costly) if costly else None)
        assert free_up_to[alpha] is None or first_cost[alpha] is None or free_up_to[alpha] < first_cost[alpha]
    assert found.curve().loc[(0.0, 16), "kmacs"] == pytest.approx(16 * (784 + 784) / 1000)


def test_the_sentences_quote_the_recorded_effects(recorded_grid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDCOURSE_RESULTS", str(RECORDED_RESULTS))
    found = recorded_grid
    text = lessons.conclusions(found, fake_latency(found.ranks), "smoke")
    assert text.startswith("In the recorded MNIST run (3 seeds;")
    assert report.brief(found.penalty_cost[(0.5, 1e-3)]) in text
    assert "1010.0 µs per image" in text and ", and the measured latency agrees" in text
    assert report.penalty_cost_text(found).count("* **α = ") == len(found.alphas)
    assert "did not run it either" in report.eurosat_skipped_text("smoke")
    assert "recording" in cost_report.recordings_text(fake_latency(found.ranks), "smoke", pd.DataFrame())


def test_a_zero_spread_is_said_as_such(recorded_grid) -> None:
    tied = [e for e in recorded_grid.rank_gain.values() if e.std == 0]
    text = report.grid_ties_text(recorded_grid)
    assert bool(tied) == bool(text)
    if tied:
        assert "on all 3 seeds" in report.brief(tied[0], 0) and "coarse grid" in text


def test_the_result_record_names_every_table_the_appendix_shows(mnist_outcome) -> None:
    outcome = mnist_outcome["first"]
    latency = fake_latency(outcome.config.ranks)
    record, summary = nuclear_record.result_record(outcome, latency)
    assert record["summary"] == summary and summary.startswith("MNIST, α = 0.5:")
    assert record["eurosat"] == "not run" and cost_report.COST_TABLE in record["tables"]
    assert set(record["effects"]) == {"penalty_cost", "distillation_gain", "chosen_rank", "chosen_test_accuracy",
                                      "test_accuracy_at_rank_16"}
    assert json.loads(json.dumps(record))["spectra_seed0"].keys() == {
        f"alpha={a:g},beta={b:g}" for a in outcome.config.alphas for b in outcome.config.betas}
