"""End-to-end test of the teacher-assistant study on a tiny generated MNIST."""

from __future__ import annotations

import pandas as pd
import pytest

from kdcourse.data import load_mnist
from kdcourse.stats import VERDICTS
from kdcourse.studies import mnist_takd, mnist_teacher
from kdcourse.studies import mnist_takd_findings as report

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory, mnist_files) -> dict:
    root = mnist_files.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)
    dataset = load_mnist(root, val_size=50, download=False)
    config = mnist_takd.config_for("smoke", seeds=SEEDS, assistant_hidden=(24, 12), epochs=1, mixed_precision=False)
    runs_root = tmp_path_factory.mktemp("runs")
    teacher = mnist_teacher.config_for("smoke", val_size=50, mixed_precision=False, run_root=runs_root)
    first = mnist_takd.run_study(config, dataset, teacher, run_root=runs_root)
    second = mnist_takd.run_study(config, dataset, teacher, run_root=runs_root)
    return {"first": first, "second": second, "root": runs_root, "teacher": teacher}


def test_every_seed_has_every_arm(outcome) -> None:
    runs = outcome["first"].runs
    arms = ["teacher", "no KD (labels only)", "KD from the teacher", "TA 24 (from the teacher)", "via TA 24",
            "TA 12 (from the teacher)", "via TA 12", "TA 12 (in the chain)", "via the chain 24 → 12"]
    for seed in SEEDS:
        assert runs[runs.seed == seed].arm.tolist() == arms
    students = runs[runs.role == "student"]
    assert set(students.parameters) == {784 * 16 + 16 + 16 * 10 + 10}
    assert runs.test_accuracy.between(0, 1).all()


def test_teachers_are_the_course_teachers(outcome) -> None:
    # the teacher checkpoints live in the course teacher's folder, not in the assistant study's
    assert (outcome["teacher"].run_dir / "teacher_seed0.ckpt").is_file()
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
        mnist_takd.run_study(mnist_takd.config_for("smoke", temperature=0.0), None, mnist_teacher.config_for("smoke"), run_root=tmp_path)
    with pytest.raises(ValueError, match="hidden"):
        mnist_takd.run_study(mnist_takd.config_for("smoke", student_hidden=0), None, mnist_teacher.config_for("smoke"),
                             run_root=tmp_path)


# ---- the chapter's tables, figure and sentences (kdcourse.studies.mnist_takd_findings)

WIDTHS = [24, 12]


def _hand_runs() -> pd.DataFrame:
    """Three seeds of every arm with widths 24 and 12. Test accuracy (%) per seed: labels only
    95 + seed / 10; every distilled student 1 point below it, except via TA 24 (0.5 below, with
    0.1 more on seed 2); assistants and the teacher higher."""
    rows = []
    for seed in range(3):
        labels = 0.95 + seed / 1000
        arms = [("teacher", "teacher", 0.99), ("no KD (labels only)", "student", labels),
                ("KD from the teacher", "student", labels - 0.01),
                ("TA 24 (from the teacher)", "assistant", 0.98), ("via TA 24", "student", labels - 0.005 + 0.001 * (seed == 2)),
                ("TA 12 (from the teacher)", "assistant", 0.97), ("via TA 12", "student", labels - 0.01),
                ("TA 12 (in the chain)", "assistant", 0.97), ("via the chain 24 → 12", "student", labels - 0.01)]
        rows += [{"seed": seed, "arm": arm, "role": role, "parameters": 1, "test_accuracy": accuracy}
                 for arm, role, accuracy in arms]
    return pd.DataFrame(rows)


def test_student_effects_pair_every_student_with_its_baselines() -> None:
    effects = report.student_effects(_hand_runs(), WIDTHS)
    students = ["KD from the teacher", "via TA 24", "via TA 12", "via the chain 24 → 12"]
    assert list(effects) == ([(s, report.LABELS) for s in students] + [(s, report.DIRECT) for s in students[1:]]
                             + [("via the chain 24 → 12", "via TA 12")])
    assert effects[("via TA 24", report.DIRECT)].mean == pytest.approx(0.5 + 0.1 / 3)
    assert effects[("KD from the teacher", report.LABELS)].mean == pytest.approx(-1.0)
    table = report.effects_table(effects).frame
    assert list(table.columns) == ["student", "against", "difference (points, mean ± std over seeds)",
                                   "95 % interval (points)", "p (paired t)", "verdict"]
    frame = report.effects_frame(effects)
    assert frame[["student", "against"]].apply(tuple, axis=1).tolist() == list(effects)


def test_lessons_and_verdict_follow_the_effects() -> None:
    runs = _hand_runs()
    summary, effects = mnist_takd.arm_summary(runs), report.student_effects(runs, WIDTHS)
    config = {"assistant_hidden": WIDTHS, "temperature": 4.0, "alpha": 0.5}
    lessons = report.lessons_text(summary, effects, config)
    assert lessons.startswith("* With this gap, distillation itself backfires")  # −1 point on every seed
    assert "Only the 24-unit assistant gives a difference from direct KD that clears the noise." in lessons
    assert "Distilling in several steps shows no benefit here" in lessons
    record = {"results": {"train_seconds": 120.0}, "provenance": {"wall_seconds": 300.0, "device": "CPU"}}
    verdict = report.closing_text(summary, effects, WIDTHS, record)
    assert "an assistant gives a measurable benefit over direct distillation" in verdict
    assert "every distilled student has a lower mean accuracy than the one trained on labels alone" in verdict
    assert "took 2.0 min and the whole chapter 5.0 min (CPU)" in verdict


def test_findings_of_a_trained_run(outcome) -> None:
    import json

    import matplotlib.pyplot as plt

    first = outcome["first"]
    summary = mnist_takd.arm_summary(first.runs)
    figure = report.width_figure(summary, WIDTHS)
    left, right = figure.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["24", "12"] and len(right.get_lines()) >= 2
    plt.close(figure)
    record = json.loads(json.dumps(report.results_record(first), allow_nan=False))
    assert record["summary"].startswith("Student 784-16-10: no KD ")
    assert len(record["runs"]) == len(first.runs) and record["config"]["assistant_hidden"] == WIDTHS
    assert [row["arm"] for row in record["tables"]["Test accuracy per arm (%)"]] == list(summary.index)
    assert len(record["effects"]) == len(report.student_effects(first.runs, WIDTHS))
