"""End-to-end test of the early-stopping distillation study on a tiny generated MNIST."""

from __future__ import annotations

import pandas as pd
import pytest

from kdcourse.data import load_mnist
from kdcourse.stats import paired_effect
from kdcourse.studies import mnist_eskd

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory, mnist_files) -> dict:
    root = mnist_files.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)
    dataset = load_mnist(root, val_size=50, download=False)
    config = mnist_eskd.config_for("smoke", seeds=SEEDS, val_size=50, train_samples=None, teacher_epochs=2, mixed_precision=False)
    runs_root = tmp_path_factory.mktemp("runs")
    first = mnist_eskd.run_study(config, dataset, run_root=runs_root)
    second = mnist_eskd.run_study(config, dataset, run_root=runs_root)
    return {"first": first, "second": second, "root": runs_root, "config": config}


def test_one_student_per_snapshot_per_size_and_a_baseline(outcome) -> None:
    runs = outcome["first"]
    for seed in SEEDS:
        rows = runs[runs.seed == seed]
        assert rows[rows.experiment == "teacher epoch"].teacher_epoch.tolist() == [1, 2]
        assert rows[rows.experiment == "teacher size"].teacher.tolist() == ["small cnn", "mlp 784-64-10"]
        assert rows[rows.experiment == "baseline"].teacher.tolist() == ["none"]
    assert runs.student_test_accuracy.between(0, 1).all()


def test_snapshots_are_kept_for_every_teacher_epoch(outcome) -> None:
    (folder,) = (outcome["root"] / "mnist_eskd").iterdir()
    assert folder.name == outcome["config"].key()
    assert sorted(p.name for p in (folder / "seed0_cnn_snapshots").iterdir()) == ["epoch_001.pt", "epoch_002.pt"]


def test_rerun_resumes_with_identical_results(outcome) -> None:
    pd.testing.assert_frame_equal(outcome["first"], outcome["second"])


def test_paired_against_subtracts_per_seed_and_gives_the_effect(outcome) -> None:
    runs = outcome["first"]
    epochs = runs[runs.experiment == "teacher epoch"]
    reference = epochs[epochs.teacher_epoch == 2].set_index("seed").student_test_accuracy
    paired = mnist_eskd.paired_against(epochs, reference).set_index("teacher_epoch")
    assert paired.loc[2, "mean"] == pytest.approx(0.0) and paired.loc[2, "std"] == pytest.approx(0.0)
    first = epochs[epochs.teacher_epoch == 1].set_index("seed").student_test_accuracy
    expected = paired_effect(first, reference)
    assert paired.loc[1, "mean"] == pytest.approx(expected.mean) and paired.loc[1, "low"] == pytest.approx(expected.low)
    assert paired.loc[1, "verdict"] == expected.verdict and paired.loc[1, "seeds"] == len(SEEDS)
    assert paired.loc[1, [f"seed {s}" for s in SEEDS]].tolist() == pytest.approx(((first - reference) * 100).tolist())
    one_seed = mnist_eskd.paired_against(epochs, reference.iloc[:1]).set_index("teacher_epoch")
    assert one_seed.loc[1, "seeds"] == 1 and pd.isna(one_seed.loc[1, "std"]) and one_seed.loc[1, "verdict"] is None


def test_teacher_epoch_is_chosen_on_validation_only(outcome) -> None:
    runs = outcome["first"]
    epochs = runs[runs.experiment == "teacher epoch"]
    for column in ("teacher_val_accuracy", "student_val_accuracy"):
        assert mnist_eskd.chosen_epoch(runs, column) == int(epochs.groupby("teacher_epoch")[column].mean().idxmax())
    with pytest.raises(ValueError, match="validation"):
        mnist_eskd.chosen_epoch(runs, "student_test_accuracy")


def test_bad_configuration_raises(tmp_path) -> None:
    with pytest.raises(ValueError, match="teacher_sizes"):
        mnist_eskd.run_study(mnist_eskd.config_for("smoke", teacher_sizes=("huge",)), None, run_root=tmp_path)
    with pytest.raises(ValueError, match="alpha"):
        mnist_eskd.run_study(mnist_eskd.config_for("smoke", alpha=2.0), None, run_root=tmp_path)
