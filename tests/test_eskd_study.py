"""End-to-end test of the early-stopping distillation study on a tiny generated MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdcourse.data import load_mnist
from kdcourse.stats import paired_effect
from kdcourse.studies import mnist_eskd
from kdcourse.studies import mnist_eskd_findings as report

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


# --- the chapter's tables and sentences (kdcourse.studies.mnist_eskd_findings), on the recorded run ---

RECORDED = Path(__file__).resolve().parents[1] / "book" / "results" / "full" / "mnist_eskd.json"


@pytest.fixture(scope="module")
def recorded_runs() -> pd.DataFrame:
    return pd.DataFrame(json.loads(RECORDED.read_text())["results"]["runs"]).drop(columns="index")


def test_analyse_picks_both_epochs_on_validation_and_pairs_by_seed(recorded_runs) -> None:
    found = report.analyse(recorded_runs)
    assert found["reference"] == mnist_eskd.chosen_epoch(recorded_runs, "teacher_val_accuracy")
    assert found["chosen"] == mnist_eskd.chosen_epoch(recorded_runs, "student_val_accuracy")
    assert found["by_epoch"].index.tolist() == list(range(1, found["last"] + 1))
    assert list(found["by_size"].index) == ["cnn", "small cnn", "mlp 784-64-10", "none"]
    effects = found["size_effects"].set_index("comparison")
    small = recorded_runs[recorded_runs.teacher == "small cnn"].set_index("seed").student_test_accuracy
    cnn = recorded_runs[(recorded_runs.teacher == "cnn") & (recorded_runs.teacher_epoch == found["last"])]
    expected = paired_effect(small, cnn.set_index("seed").student_test_accuracy)
    assert effects.loc["small CNN student − CNN student", "mean"] == pytest.approx(expected.mean)
    assert effects.loc["small CNN student − CNN student", "verdict"] == expected.verdict


def test_the_sentences_quote_the_effects_of_the_tables(recorded_runs) -> None:
    found = report.analyse(recorded_runs)
    text = report.conclusions(found)
    size = found["size_effects"].set_index(["kind", "teacher", "against"])
    small = report.as_effect(size.loc[("student", "small cnn", "cnn")])
    assert small.describe() in text and "over the three seeds" in text
    assert report.choice_text(found) in text
    design = report.design_text(json.loads(RECORDED.read_text())["results"]["config"])
    assert "For each of three seeds" in design and "a small CNN (" in design and "an MLP 784-64-10 (" in design


def test_an_early_teacher_that_teaches_better_on_every_seed_is_said_so() -> None:
    rows = []
    for seed in (0, 1, 2):
        for epoch, student in ((1, 0.95), (2, 0.97 + 0.001 * seed), (3, 0.96)):
            rows.append({"seed": seed, "experiment": "teacher epoch", "teacher": "cnn", "teacher_epoch": epoch,
                         "teacher_test_accuracy": 0.9 + 0.01 * epoch, "teacher_val_accuracy": 0.9 + 0.01 * epoch,
                         "student_test_accuracy": student, "student_val_accuracy": student, "seconds": 1.0})
        rows.append({"seed": seed, "experiment": "baseline", "teacher": "none", "teacher_epoch": 0,
                     "teacher_test_accuracy": float("nan"), "teacher_val_accuracy": float("nan"),
                     "student_test_accuracy": 0.94, "student_val_accuracy": 0.94, "seconds": 1.0})
    found = report.analyse(pd.DataFrame(rows))
    assert (found["reference"], found["chosen"]) == (3, 2)
    against_reference, _ = report._epoch_effects(found)
    assert against_reference[2].clears_noise and against_reference[2].mean == pytest.approx(1.1)
    assert report._epoch_head(found, against_reference).startswith(
        "**An early-stopped teacher was the better teacher for epoch 2.**")
    assert "the students' validation accuracy picks epoch 2" in report.choice_text(found)


def test_the_result_record_is_json_and_keeps_the_runs(recorded_runs) -> None:
    config = mnist_eskd.config_for("full")
    record = report.result_record(report.analyse(recorded_runs), recorded_runs, config)
    assert json.loads(json.dumps(record))["runs"][0]["seed"] == recorded_runs.seed.iloc[0]
    assert record["config"]["seeds"] == [0, 1, 2] and record["reference_epoch"] == report.analyse(recorded_runs)["reference"]
    assert any(name.startswith("Students against the reference teacher's student (epoch") for name in record["tables"])


def test_counts_and_lists_read_as_prose() -> None:
    from kdcourse.course.findings import in_words, listing

    assert [in_words(n) for n in (1, 3, 12, 13)] == ["one", "three", "twelve", "13"]
    assert [listing(items) for items in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == ["", "a", "a and b", "a, b and c"]
