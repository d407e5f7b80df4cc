"""End-to-end test of the teacher-assistant study on a tiny generated MNIST."""

from __future__ import annotations

import pandas as pd
import pytest

from kdcourse.data import load_mnist
from kdcourse.stats import VERDICTS
from kdcourse.studies import mnist_distillation, mnist_takd

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory, mnist_files) -> dict:
    root = mnist_files.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)
    dataset = load_mnist(root, val_size=50, download=False)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(mnist_distillation.PROFILES, "smoke", mnist_distillation.config_for(
        "smoke", val_size=50, train_samples=None, teacher_epochs=1, mixed_precision=False))
    config = mnist_takd.config_for("smoke", seeds=SEEDS, assistant_hidden=(24, 12), epochs=1, mixed_precision=False)
    runs_root = tmp_path_factory.mktemp("runs")
    try:
        first = mnist_takd.run_study(config, dataset, "smoke", run_root=runs_root)
        second = mnist_takd.run_study(config, dataset, "smoke", run_root=runs_root)
    finally:
        monkeypatch.undo()
    return {"first": first, "second": second, "root": runs_root}


def test_every_seed_has_every_arm(outcome) -> None:
    runs = outcome["first"].runs
    arms = ["teacher", "no KD (labels only)", "KD from the teacher", "TA 24 (from the teacher)", "via TA 24",
            "TA 12 (from the teacher)", "via TA 12", "TA 12 (in the chain)", "via the chain 24 → 12"]
    for seed in SEEDS:
        assert runs[runs.seed == seed].arm.tolist() == arms
    students = runs[runs.role == "student"]
    assert set(students.parameters) == {784 * 16 + 16 + 16 * 10 + 10}
    assert runs.test_accuracy.between(0, 1).all()


def test_teachers_are_shared_with_the_distillation_study(outcome) -> None:
    # the teacher checkpoints live in the distillation study's folder, not in the assistant study's
    assert list((outcome["root"] / "mnist_distillation").glob("*/teacher_seed0.ckpt"))
    assert not list((outcome["root"] / "mnist_takd").glob("*/teacher_seed0.ckpt"))


def test_rerun_resumes_from_checkpoints_with_identical_results(outcome) -> None:
    pd.testing.assert_frame_equal(outcome["first"].runs, outcome["second"].runs)
    assert outcome["second"].train_seconds == pytest.approx(outcome["first"].train_seconds)


def test_summaries(outcome) -> None:
    runs = outcome["first"].runs
    summary = mnist_takd.arm_summary(runs)
    assert summary.index[0] == "teacher" and (summary.seeds == len(SEEDS)).all()
    difference = mnist_takd.paired_difference(runs, "via TA 24", "KD from the teacher")
    assert difference["seeds"] == len(SEEDS)
    expected = (runs[runs.arm == "via TA 24"].test_accuracy.values - runs[runs.arm == "KD from the teacher"].test_accuracy.values).mean() * 100
    assert difference["mean"] == pytest.approx(expected)
    effect = mnist_takd.arm_effect(runs, "via TA 24", "KD from the teacher")
    assert effect.n == len(SEEDS) and effect.mean == pytest.approx(expected)
    assert effect.std == pytest.approx(difference["std"]) and effect.verdict in VERDICTS


def test_impossible_settings_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="temperature"):
        mnist_takd.run_study(mnist_takd.config_for("smoke", temperature=0.0), None, "smoke", run_root=tmp_path)
    with pytest.raises(ValueError, match="hidden"):
        mnist_takd.run_study(mnist_takd.config_for("smoke", student_hidden=0), None, "smoke", run_root=tmp_path)
