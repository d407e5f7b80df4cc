"""End-to-end test of the subclass distillation study on a tiny generated MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdcourse.data import load_mnist
from kdcourse.studies import mnist_subclass
from kdcourse.studies import mnist_subclass_figures as figures
from kdcourse.studies import mnist_subclass_findings as report
from kdcourse.studies import mnist_subclass_lessons as lessons

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory, mnist_files) -> dict:
    root = mnist_files.write_mnist(tmp_path_factory.mktemp("mnist"), n_train=300, n_test=100)
    dataset = load_mnist(root, val_size=50, download=False)
    config = mnist_subclass.config_for("smoke", seeds=SEEDS, val_size=50, train_samples=None, limited_samples=40, mixed_precision=False)
    runs_root = tmp_path_factory.mktemp("runs")
    first = mnist_subclass.run_study(config, dataset, run_root=runs_root)
    second = mnist_subclass.run_study(config, dataset, run_root=runs_root)
    return {"first": first, "second": second, "config": config, "dataset": dataset}


def test_four_teachers_with_their_output_widths(outcome) -> None:
    teachers = outcome["first"].teachers
    widths = teachers[teachers.seed == 0].set_index("teacher").outputs.to_dict()
    assert widths == {"digits": 10, "binary": 2, "binary learned": 10, "ten-class learned": 20}
    assert teachers.test_accuracy.between(0, 1).all() and teachers.binary_test_accuracy.between(0, 1).all()


def test_every_arm_and_regime_for_every_seed(outcome) -> None:
    students = outcome["first"].students
    binary = students[students.task == "binary"]
    assert set(binary.regime) == {"all labels", "40 labels"}
    assert binary.groupby(["seed", "regime"]).arm.nunique().eq(5).all()
    ten = students[students.task == "ten-class"]
    assert set(ten.regime) == {"all labels"} and ten.groupby("seed").arm.nunique().eq(4).all()
    assert ten[ten.arm == "learned-subclass KD"].outputs.eq(20).all()
    assert ten[ten.arm == "KD from the learned teacher's class logits"].outputs.eq(10).all()  # the control
    subclass_rows = students[students.arm.isin(["learned-subclass KD", "known-subclass KD"]) & (students.task == "binary")]
    assert subclass_rows.outputs.eq(10).all()
    assert students.test_accuracy.between(0, 1).all()


def test_contingency_counts_every_test_image_once(outcome) -> None:
    for seed in SEEDS:
        table = outcome["first"].contingency[seed]
        assert table.shape == (10, 10)
        np.testing.assert_array_equal(table.sum(axis=0), np.bincount(outcome["dataset"].test.y.numpy(), minlength=10))
    subclasses = outcome["first"].subclasses
    assert subclasses.nmi_with_digits.between(0, 1).all()
    assert (subclasses.smallest_share <= subclasses.largest_share).all()


def test_rerun_resumes_with_identical_results(outcome) -> None:
    pd.testing.assert_frame_equal(outcome["first"].students, outcome["second"].students)
    pd.testing.assert_frame_equal(outcome["first"].teachers.drop(columns="seconds"), outcome["second"].teachers.drop(columns="seconds"))


def test_paired_against_is_a_per_seed_difference(outcome) -> None:
    students = outcome["first"].students
    paired = mnist_subclass.paired_against(students, "binary", "all labels", "no KD")
    assert "no KD" not in paired.index and len(paired) == 4
    rows = students[(students.task == "binary") & (students.regime == "all labels")]
    a = rows[rows.arm == "known-subclass KD"].set_index("seed").test_accuracy
    b = rows[rows.arm == "no KD"].set_index("seed").test_accuracy
    assert paired.loc["known-subclass KD", "mean"] == pytest.approx(((a - b) * 100).mean())


@pytest.mark.parametrize("override, message", [
    ({"alpha": 1.5}, "alpha"), ({"aux_weight": -1.0}, "aux_weight"), ({"ten_class_subclasses": 1}, "ten_class_subclasses"),
    ({"limited_samples": 0}, "limited_samples"),
])
def test_bad_configuration_raises(override, message, tmp_path) -> None:
    with pytest.raises(ValueError, match=message):
        mnist_subclass.run_study(mnist_subclass.config_for("smoke", **override), None, run_root=tmp_path)


# --- the chapter's analysis (kdcourse.studies.mnist_subclass_findings, _figures and _lessons) -------

BINARY_ARMS = ["no KD", report.KD, report.CONTROL, report.LEARNED, report.KNOWN]
TEN_ARMS = ["no KD", report.TEN_KD, report.LEARNED, report.CONTROL]


def synthetic_rows(learned_gain: tuple[float, ...] = (0.009, 0.011, 0.010)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Teachers and students of three seeds: every arm at 0.98 plus a small per-seed jitter, the
    learned-subclass students of the binary task ``learned_gain`` above conventional KD."""
    teachers, students = [], []
    for seed, gain in enumerate(learned_gain):
        jitter = 0.001 * seed
        for name, (task, learned) in mnist_subclass.TEACHERS.items():
            teachers.append({"seed": seed, "teacher": name, "task": task, "outputs": 10, "test_accuracy": 0.99 + jitter,
                             "binary_test_accuracy": 0.99 + jitter + (0.002 * seed if name == "digits" else 0.0)})
        for regime in ("all labels", "1000 labels"):
            for arm in BINARY_ARMS:
                accuracy = 0.98 + jitter + (gain if arm == report.LEARNED else 0.0)
                students.append({"seed": seed, "task": "binary", "regime": regime, "arm": arm, "outputs": 2,
                                 "test_accuracy": accuracy})
        for arm in TEN_ARMS:
            students.append({"seed": seed, "task": "ten-class", "regime": "all labels", "arm": arm,
                             "outputs": 20 if arm == report.LEARNED else 10, "test_accuracy": 0.98 + jitter})
    return pd.DataFrame(teachers), pd.DataFrame(students)


def test_comparison_rows_are_paired_effects_in_points() -> None:
    a = pd.Series([0.90, 0.92, 0.95], index=[0, 1, 2])
    b = pd.Series([0.89, 0.90, 0.96], index=[0, 1, 2])
    rows, effects = report.comparison_rows([("a − b", a, b)])
    assert effects["a − b"].mean == pytest.approx(100 * (a - b).mean())
    assert rows.loc[0, "per seed"] == "+1.00, +2.00, −1.00"
    assert rows.loc[0, "verdict"] == effects["a − b"].verdict == "within noise"


def test_compare_arms_labels_and_verdicts() -> None:
    _, students = synthetic_rows()
    _, effects = report.compare_arms(students, "binary", "1000 labels", report.BINARY_PAIRS)
    assert len(effects) == len(report.BINARY_PAIRS)
    gain = effects["learned subclasses − conventional KD"]
    assert gain.mean == pytest.approx(1.0) and gain.clears_noise
    assert effects["known subclasses − conventional KD"].mean == pytest.approx(0.0)


def test_rule_text_gives_the_three_seed_ratio() -> None:
    # t(0.975, 2 dof) / sqrt(3) = 4.303 / 1.732 = 2.48
    assert "three seeds" in report.rule_text(3) and "about 2.5 times" in report.rule_text(3)


def test_training_labels() -> None:
    assert report.training_labels({"train_samples": None, "val_size": 5000}, 60_000) == 55_000
    assert report.training_labels({"train_samples": 512, "val_size": 5000}, 60_000) == 512


def test_digit_match_finds_own_and_shared_subclasses() -> None:
    counts = np.diag(np.full(10, 50))
    counts[4, 9], counts[9, 9] = 50, 0  # digit 9 goes to digit 4's subclass; subclass 9 is empty
    match = report.digit_match({1: counts, 0: counts})
    assert match.seed == 0
    np.testing.assert_allclose(match.share_of_digit.sum(axis=0), 1.0)
    assert match.own_digits == [0, 1, 2, 3, 5, 6, 7, 8] and match.shared_groups == [[4, 9]]
    assert match.usage.shape == (2, 10) and match.usage[:, 9].max() == 0 and match.usage[0, 4] == pytest.approx(0.2)
    assert "9 → 0.4 (100 %)" in match.describe()


def test_findings_text_follows_the_verdicts() -> None:
    teachers, students = synthetic_rows()
    nmi = pd.DataFrame([{"teacher": "binary learned", "nmi_mean": 0.5, "nmi_std": 0.1}]).set_index("teacher")
    counts = {seed: np.diag(np.full(10, 50)) for seed in range(3)}
    described = {"limited_samples": 1000, "val_size": 5000}
    text = lessons.findings_text(teachers, students, nmi, counts, described, 55_000)
    assert text.startswith("\nIn the recorded full run (three seeds, appendix)")
    assert "the gain of known subclasses is within noise, that of learned subclasses established" in text
    assert "positive on all three seeds (the smallest +0.90)" in text
    assert "the digits 0, 1, 2, 3, 4, 5, 6, 7, 8 and 9 each get a subclass of their own" in text
    assert "With all 55,000 labels" in text and "{ref}`the subclass poster" in text
    assert "transfers more than its class distribution" in lessons.conclusion_text(teachers, students)
    _, flat = synthetic_rows((0.0, 0.0, 0.0))
    assert "this experiment finds 0.00" in lessons.conclusion_text(teachers, flat)


def test_recorded_results_render() -> None:
    """The chapter's findings render from the recorded full run (the rows the smoke build shows)."""
    record = mnist_subclass_recorded()
    teachers, students = pd.DataFrame(record["teachers"]), pd.DataFrame(record["students"])
    nmi = pd.DataFrame(record["tables"][report.NMI_TABLE]).set_index("teacher")
    counts = {int(seed): np.array(c) for seed, c in record["contingency_binary_learned"].items()}
    train_labels = report.training_labels(record["config"], 60_000)
    text = lessons.findings_text(teachers, students, nmi, counts, record["config"], train_labels)
    summary = mnist_subclass.arm_summary(students).loc[("binary", "1000 labels", report.LEARNED)]
    assert f"{summary['mean']:.2f} ± {summary['std']:.2f} %" in text
    assert report.experiment_text(record["config"], train_labels).count("\n| `") == 4


def mnist_subclass_recorded() -> dict:
    from kdcourse.course.results import load_results

    return load_results("mnist_subclass", folder=Path(__file__).resolve().parents[1] / "book" / "results" / "full")["results"]


def test_result_record_and_live_rows(outcome) -> None:
    run = outcome["first"]
    record = report.result_record(run)
    assert record["config"]["seeds"] == list(SEEDS)
    assert "Binary, 40 labels: minus conventional KD (points)" in record["tables"]
    assert len(record["effects"]) == 2 * len(report.BINARY_PAIRS) + len(report.TEN_PAIRS) + len(report.TEACHER_PAIRS)
    assert set(record["contingency_binary_learned"]) == {str(s) for s in SEEDS}
    teachers, students, nmi, counts = report.finding_rows("full", run)
    assert teachers is run.teachers and students is run.students
    assert list(nmi.index) == ["binary learned", "ten-class learned"] and set(counts) == set(SEEDS)


def test_figures(outcome) -> None:
    import matplotlib

    matplotlib.use("Agg")
    run, dataset = outcome["first"], outcome["dataset"]
    gallery = figures.subclass_gallery(run.models["binary learned"], dataset.test.x, "gallery", per_row=4)
    assert len(gallery.axes) == 10 * 4
    summary = mnist_subclass.arm_summary(run.students)
    bars = figures.binary_bars(summary, report.binary_regimes(run.students))
    assert [ax.get_title() for ax in bars.axes] == ["Binary students, all labels", "Binary students, 40 labels"]
    heatmap = figures.subclass_heatmap(report.digit_match(run.contingency))
    assert heatmap.axes[0].get_xlabel() == "digit"
