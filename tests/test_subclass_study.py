"""End-to-end test of the subclass distillation study on a tiny generated MNIST."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdcourse.data import load_mnist
from kdcourse.studies import mnist_subclass

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
