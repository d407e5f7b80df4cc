"""End-to-end test of the MNIST distillation study on a tiny generated MNIST."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from kdcourse.data import load_mnist
from kdcourse.stats import VERDICTS, Effect
from kdcourse.studies import mnist_distillation as study
from kdcourse.studies import mnist_distillation_costs as cost_report
from kdcourse.studies import mnist_distillation_figures as figures
from kdcourse.studies import mnist_distillation_findings as report
from kdcourse.studies import mnist_distillation_lessons as lessons
from kdcourse.studies import mnist_teacher

SEEDS, TEMPERATURES, ALPHAS = (0, 1), (1, 4), (0.5,)


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory, mnist_files):
    root = mnist_files.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)
    return load_mnist(root, val_size=50, download=False)


@pytest.fixture(scope="module")
def config() -> study.StudyConfig:
    return study.config_for(
        "smoke", train_samples=None, val_size=50, seeds=SEEDS, temperatures=TEMPERATURES, alphas=ALPHAS,
        teacher_epochs=1, student_epochs=1, mixed_precision=False, headline=(4.0, 0.5),
    )


@pytest.fixture(scope="module")
def run(tiny_mnist, config, tmp_path_factory: pytest.TempPathFactory) -> dict:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("KDCOURSE_PROGRESS", "0")
    run_dir = tmp_path_factory.mktemp("runs")
    try:
        first = study.run_study(config, tiny_mnist, run_root=run_dir)
        second = study.run_study(config, tiny_mnist, run_root=run_dir)
    finally:
        monkeypatch.undo()
    return {"first": first, "second": second, "run_dir": run_dir}


def test_config_for_applies_overrides_and_ignores_none(config: study.StudyConfig) -> None:
    assert config.seeds == SEEDS and config.temperatures == TEMPERATURES and config.alphas == ALPHAS
    assert config.train_samples == study.PROFILES["smoke"].train_samples  # None means "keep the profile's"
    assert config.student_batch_size == study.PROFILES["smoke"].student_batch_size
    assert config.key() == study.config_for("smoke", **{f: getattr(config, f) for f in ("seeds", "temperatures", "alphas", "teacher_epochs", "student_epochs", "mixed_precision", "val_size")}).key()
    assert config.key() != study.config_for("smoke").key()
    with pytest.raises(TypeError):
        study.config_for("smoke", no_such_field=1)


def test_runs_have_one_row_per_seed_and_arm(run, tiny_mnist) -> None:
    runs = run["first"].runs
    per_seed = 1 + len(TEMPERATURES) * len(ALPHAS) + 1
    assert len(runs) == len(SEEDS) * per_seed
    for seed in SEEDS:
        rows = runs[runs.seed == seed]
        assert rows.model.tolist() == ["teacher"] + ["kd"] * len(TEMPERATURES) * len(ALPHAS) + ["scratch"]
        kd = rows[rows.model == "kd"]
        assert sorted(zip(kd.temperature, kd.alpha)) == sorted((float(t), a) for t in TEMPERATURES for a in ALPHAS)
        assert rows[rows.model != "kd"].temperature.isna().all() and rows[rows.model != "kd"].alpha.isna().all()
    expected = {"seed", "model", "temperature", "alpha", "val_accuracy", "test_accuracy", "best_epoch", "precision", "recall", "f1"}
    assert expected <= set(runs.columns)
    for column in ("val_accuracy", "test_accuracy", "precision", "recall", "f1"):
        assert runs[column].between(0, 1).all(), column
    assert (runs.best_epoch == 1).all()  # one epoch each
    # accuracies are multiples of 1/len(split)
    assert ((runs.test_accuracy * len(tiny_mnist.test)).round(6) % 1 == 0).all()


def test_outcome_keeps_the_models_of_the_first_seed(run, tiny_mnist) -> None:
    outcome = run["first"]
    assert set(outcome.models) == {"teacher", "kd", "scratch"}
    first_seed = outcome.runs[outcome.runs.seed == SEEDS[0]].set_index("model")
    for name, model in outcome.models.items():
        assert isinstance(model, nn.Module) and not model.training
        with torch.no_grad():
            logits = model(tiny_mnist.test.x)
        assert logits.shape == (len(tiny_mnist.test), 10)
        accuracy = (logits.argmax(1) == tiny_mnist.test.y).float().mean().item()
        if name == "kd":
            row = first_seed[(first_seed.temperature == 4.0) & (first_seed.alpha == 0.5)].iloc[0]
        else:
            row = first_seed.loc[name]
        assert accuracy == pytest.approx(row.test_accuracy)
    assert outcome.train_seconds > 0
    assert set(outcome.epoch_seconds) == {"teacher", "students (all arms of one seed)"}


def test_run_directory_holds_checkpoints_and_cached_teacher_logits(run) -> None:
    config = run["first"].config
    teacher = study.teacher_config(config, run["run_dir"])
    # the students in a folder per configuration, named by its key; the teachers in the course teacher's
    assert {p.name for p in run["run_dir"].iterdir()} == {config.key(), "mnist_teacher"}
    students = {p.name for p in (run["run_dir"] / config.key()).iterdir()}
    teachers = {p.name for p in teacher.run_dir.iterdir()}
    assert teacher.run_dir == run["run_dir"] / "mnist_teacher" / teacher.key()
    for seed in SEEDS:
        assert f"students_seed{seed}_from0.ckpt" in students
        assert {f"teacher_seed{seed}.ckpt", f"teacher_logits_seed{seed}.pt"} <= teachers


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_the_study_trains_the_course_teacher_of_its_profile(profile: str) -> None:
    assert study.teacher_config(study.config_for(profile)) == mnist_teacher.config_for(profile)


def test_the_teacher_folder_is_named_by_its_recipe_only(tmp_path) -> None:
    teacher = mnist_teacher.config_for("smoke")
    assert teacher.key() == mnist_teacher.config_for("smoke", run_root=tmp_path).key()
    assert teacher.key() != mnist_teacher.config_for("smoke", epochs=2).key()
    assert teacher.key() != mnist_teacher.config_for("smoke", train_samples=100).key()
    assert mnist_teacher.config_for("smoke", run_root=tmp_path).run_dir == tmp_path / "mnist_teacher" / teacher.key()


def test_a_study_reads_the_teacher_that_another_trained(run, tiny_mnist) -> None:
    teacher = study.teacher_config(run["first"].config, run["run_dir"])
    trained = mnist_teacher.train_teacher(teacher, tiny_mnist, SEEDS[0], "cpu")
    assert trained.logits.shape == (len(tiny_mnist.train), 10)
    for a, b in zip(trained.model.state_dict().values(), run["first"].models["teacher"].state_dict().values()):
        assert torch.equal(a.cpu(), b)
    with pytest.raises(ValueError, match="validation images"):
        mnist_teacher.train_teacher(mnist_teacher.config_for("smoke", run_root=run["run_dir"]), tiny_mnist, 0, "cpu")


def test_second_run_resumes_with_identical_results(run) -> None:
    first, second = run["first"], run["second"]
    pd.testing.assert_frame_equal(first.runs, second.runs)
    assert second.train_seconds == pytest.approx(first.train_seconds)  # taken from the checkpoints, nothing retrained
    for name in first.models:
        for (key, a), b in zip(first.models[name].state_dict().items(), second.models[name].state_dict().values()):
            assert torch.equal(a, b), (name, key)


def test_grid_table_summarises_the_kd_grid(run) -> None:
    table = study.grid_table(run["first"].runs)
    assert list(table.columns) == ["mean", "std", "count"]
    assert sorted(table.index) == sorted((float(t), a) for t in TEMPERATURES for a in ALPHAS)
    assert (table["count"] == len(SEEDS)).all()
    runs = run["first"].runs
    kd = runs[(runs.model == "kd") & (runs.temperature == 4.0) & (runs.alpha == 0.5)]
    assert table.loc[(4.0, 0.5), "mean"] == pytest.approx(kd.test_accuracy.mean())
    assert table.loc[(4.0, 0.5), "std"] == pytest.approx(kd.test_accuracy.std(ddof=1))


def test_paired_comparison_pairs_kd_and_scratch_by_seed(run) -> None:
    runs = run["first"].runs
    comparison = study.paired_comparison(runs, 4.0, 0.5)
    assert isinstance(comparison, Effect) and comparison.n == len(SEEDS) and comparison.over == "seeds"
    kd = runs[(runs.model == "kd") & (runs.temperature == 4.0)].set_index("seed").test_accuracy
    scratch = runs[runs.model == "scratch"].set_index("seed").test_accuracy
    differences = (kd - scratch) * 100
    assert comparison.mean == pytest.approx(differences.mean())
    assert comparison.std == pytest.approx(differences.std(ddof=1))
    assert 0 <= comparison.p_value <= 1 and comparison.verdict in VERDICTS
    against_t1 = study.paired_comparison(runs, 4.0, 0.5, baseline=(1.0, 0.5))
    assert against_t1.mean == pytest.approx(((kd - study.arm_accuracy(runs, "kd", 1.0, 0.5)) * 100).mean())


def _hand_runs() -> pd.DataFrame:
    nan = float("nan")
    return pd.DataFrame(
        [
            {"seed": 0, "model": "kd", "temperature": 4.0, "alpha": 0.5, "test_accuracy": 0.97},
            {"seed": 0, "model": "scratch", "temperature": nan, "alpha": nan, "test_accuracy": 0.96},
            {"seed": 1, "model": "kd", "temperature": 4.0, "alpha": 0.5, "test_accuracy": 0.95},
            {"seed": 1, "model": "scratch", "temperature": nan, "alpha": nan, "test_accuracy": 0.96},
            {"seed": 2, "model": "kd", "temperature": 4.0, "alpha": 0.5, "test_accuracy": 0.98},
            {"seed": 2, "model": "scratch", "temperature": nan, "alpha": nan, "test_accuracy": 0.95},
            {"seed": 0, "model": "kd", "temperature": 1.0, "alpha": 0.5, "test_accuracy": 0.96},
            {"seed": 1, "model": "kd", "temperature": 1.0, "alpha": 0.5, "test_accuracy": 0.94},
            {"seed": 2, "model": "kd", "temperature": 1.0, "alpha": 0.5, "test_accuracy": 0.96},
        ]
    )


def test_paired_comparison_by_hand() -> None:
    runs = _hand_runs()
    comparison = study.paired_comparison(runs, 4.0, 0.5)
    assert comparison.n == 3
    assert comparison.mean == pytest.approx(1.0)  # differences +1, −1, +3 points
    assert comparison.std == pytest.approx(2.0)
    from scipy import stats

    assert comparison.p_value == pytest.approx(stats.ttest_1samp([1.0, -1.0, 3.0], 0.0).pvalue)
    assert comparison.verdict == "within noise"
    with pytest.raises(ValueError, match="at least 2"):
        study.paired_comparison(runs[runs.seed == 0], 4.0, 0.5)


def test_grid_effects_compare_every_grid_point() -> None:
    runs = _hand_runs()
    table = study.grid_effects(runs)
    assert list(table.index) == [(1.0, 0.5), (4.0, 0.5)] and table.index.names == ["temperature", "alpha"]
    assert table.loc[(4.0, 0.5), "mean"] == pytest.approx(1.0)
    assert table.loc[(1.0, 0.5), "mean"] == pytest.approx(-1 / 3)  # differences 0, −2, +1 points
    assert set(table.verdict) <= set(VERDICTS)
    against = study.grid_effects(runs, baseline=(4.0, 0.5))
    assert list(against.index) == [(1.0, 0.5)]  # the baseline's own row is left out
    assert against.loc[(1.0, 0.5), "mean"] == pytest.approx(-4 / 3)  # differences −1, −1, −2 points


# ---- the chapter's tables, figures and sentences (kdcourse.studies.mnist_distillation_findings, _figures,
# _costs and _lessons)


def _grid_runs() -> pd.DataFrame:
    """Three seeds of a 3 × 1 grid (T = 1, 4, 16 at α = 0.5), the scratch student and the teacher.

    Per seed, test accuracy: teacher 0.99; scratch 0.95, 0.96, 0.95; KD at T = 1 scratch + 0.001;
    at T = 4 scratch + 0.01; at T = 16 scratch + 0.011, +0.010, +0.012. Validation ranks T = 16 first."""
    nan, rows = float("nan"), []
    for seed, scratch in enumerate([0.95, 0.96, 0.95]):
        rows.append({"seed": seed, "model": "teacher", "temperature": nan, "alpha": nan,
                     "val_accuracy": 0.99, "test_accuracy": 0.99, "f1": 0.99})
        rows.append({"seed": seed, "model": "scratch", "temperature": nan, "alpha": nan,
                     "val_accuracy": 0.95, "test_accuracy": scratch, "f1": scratch})
        for t, gain, val in [(1.0, 0.001, 0.95), (4.0, 0.01, 0.96), (16.0, [0.011, 0.010, 0.012][seed], 0.97)]:
            rows.append({"seed": seed, "model": "kd", "temperature": t, "alpha": 0.5,
                         "val_accuracy": val, "test_accuracy": scratch + gain, "f1": scratch + gain})
    return pd.DataFrame(rows)


def test_compare_arms_chooses_on_validation_and_pairs_by_seed() -> None:
    comparison = report.compare_arms(_grid_runs(), (4.0, 0.5))
    assert comparison.selected == (16.0, 0.5)  # the best validation accuracy, whatever the test set says
    assert list(comparison.arms) == ["teacher (CNN)", "KD student, T=4, α=0.5",
                                     "KD student, best on validation (T=16, α=0.5)", "student from scratch (α=0)"]
    assert comparison.gain.mean == pytest.approx(1.0) and comparison.gain.n == 3  # +1 point on every seed
    assert comparison.best_over_head.mean == pytest.approx(0.1)  # +0.1, 0, +0.2 points
    assert comparison.wins() == 3
    assert comparison.headline.test_accuracy_mean.tolist() == pytest.approx([0.99, 0.96333, 0.96433, 0.95333], abs=1e-4)
    text = report.wins_text(comparison)
    assert "beats its scratch twin on 3 of\n3 seeds" in text and comparison.gain.describe() in text
    table = report.gains_table(comparison).frame
    assert table["comparison (test accuracy)"].tolist() == list(comparison.gains)
    assert table["difference (points, mean ± std over seeds)"][0] == "+1.00 ± 0.00" and (table.seeds == "3").all()


def test_plateau_counts_the_grid_points_from_the_headline_temperature() -> None:
    found = report.plateau(_grid_runs(), (4.0, 0.5))
    assert list(found.effects.index) == [(16.0, 0.5)]  # T = 1 lies below the plateau, the headline is the baseline
    assert found.largest == pytest.approx(0.1) and found.by_chance == pytest.approx(0.05)
    assert found.flat  # one comparison: at most one may clear the noise by chance
    assert "the other 1 grid points with $T \\ge 4$" in report.plateau_text(found)
    ranking = report.ranking_table(_grid_runs(), (4.0, 0.5), top=2).frame
    assert ranking["T"].tolist() == ["16", "4"] and ranking.iloc[1, 4] == "reference"


def test_temperature_curve_reads_the_low_end_against_the_headline() -> None:
    curve = report.temperature_curve(_grid_runs(), 4.0)
    assert curve.alpha == 0.5 and curve.temperatures == [1.0, 4.0, 16.0]
    (low_t, low), (second_t, second) = curve.low, curve.second
    assert (low_t, second_t) == (1.0, 4.0)
    assert low.mean == pytest.approx(0.1) and second.mean == pytest.approx(1.0)
    assert not curve.rising  # the second temperature is the headline one itself
    text = report.temperature_text(curve)
    assert "From\n$T = 4$ on, the differences lie between +1.00 and\n+1.10 points" in text
    assert report.temperature_table(curve).frame["temperature"].tolist() == ["T = 1", "T = 4", "T = 16"]


def test_figures_draw_the_grid_and_the_temperature_curve() -> None:
    runs = _grid_runs()
    heatmap = figures.grid_heatmap(runs)
    cells = heatmap.axes[0].images[0].get_array()
    assert cells.shape == (3, 1)  # T = 1, 4, 16 by α = 0.5, in %
    assert cells[2, 0] == pytest.approx(100 * (0.95 + 0.96 + 0.95 + 0.033) / 3)
    curve = report.temperature_curve(runs, 4.0)
    ax = figures.temperature_figure(runs, curve).axes[0]
    kd = next(c for c in ax.containers if c.get_label() == "KD student")  # the error-bar curve
    assert list(kd.lines[0].get_xdata()) == [1.0, 4.0, 16.0]
    scratch = next(line for line in ax.get_lines() if line.get_label().startswith("from scratch"))
    assert scratch.get_ydata()[0] == pytest.approx(100 * (0.95 + 0.96 + 0.95) / 3)

def test_lessons_follow_the_verdicts() -> None:
    runs = _grid_runs()
    comparison, found, curve = report.compare_arms(runs, (4.0, 0.5)), report.plateau(runs, (4.0, 0.5)), \
        report.temperature_curve(runs, 4.0)
    cost = pd.DataFrame({"parameters": [100.0, 150.0], "macs": [900.0, 100.0]}, index=["teacher (CNN)", "student (MLP)"])
    text = lessons.lessons_text(comparison, found, curve, cost, recorded=True)
    assert text.count("\n* ") == 2 and text.startswith("* Distillation from a CNN makes the MLP student better")
    assert "recorded full run (appendix)" in text and "(9 times\n  fewer MACs)" in text and "(50 % more)" in text
    assert "here it is also the best *test* cell" in text  # T = 16 is best on validation and on test


def test_results_record_is_json_of_the_live_run(run) -> None:
    import json

    outcome = run["first"]
    comparison = report.compare_arms(outcome.runs, outcome.config.headline)
    cost = cost_report.cost_frame(outcome.models, repeats=1)
    assert list(cost.index) == ["teacher (CNN)", "student (MLP)"] and (cost.MFLOPs == cost.flops / 1e6).all()
    record = json.loads(json.dumps(report.results_record(outcome, comparison, cost), allow_nan=False))
    assert record["summary"] == report.results_summary(comparison, outcome.config.seeds)
    assert len(record["runs"]) == len(outcome.runs) and record["config"]["seeds"] == list(SEEDS)
    assert record["kd_gain_points"]["mean"] == pytest.approx(comparison.gain.mean, abs=1e-6)
    grid = record["tables"]["T × α grid (test accuracy, fraction)"]
    assert [(row["temperature"], row["alpha"]) for row in grid] == [(1.0, 0.5), (4.0, 0.5)]
    assert [row["model"] for row in record["tables"]["Cost per image"]] == list(cost.index)
