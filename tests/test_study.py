"""End-to-end test of the MNIST distillation study on a tiny generated MNIST."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from kdcourse.data import load_mnist
from kdcourse.stats import VERDICTS, Effect
from kdcourse.studies import mnist_distillation as study

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
    (run_dir,) = run["run_dir"].iterdir()  # one folder per configuration, named by its key
    assert run_dir.name == run["first"].config.key()
    names = {p.name for p in run_dir.iterdir()}
    for seed in SEEDS:
        assert {f"teacher_seed{seed}.ckpt", f"students_seed{seed}_from0.ckpt", f"teacher_logits_seed{seed}.pt"} <= names


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
