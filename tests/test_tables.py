"""Tests of kdcourse.course.tables: results tables a reader can read."""

from __future__ import annotations

import math

import pandas as pd

from kdcourse.course.tables import MISSING, mean_std_text, readable


def test_mean_and_std_columns_merge_into_one_cell_without_index_or_nan() -> None:
    frame = pd.DataFrame(
        {"teacher_epoch": [1, 2], "teacher_mean": [98.3, 98.9], "teacher_std": [0.135, float("nan")],
         "student_mean": [98.337, None], "student_std": [0.02, None], "seeds": [3.0, float("nan")]}
    ).set_index("teacher_epoch")
    table = readable(frame, {"teacher": "teacher test accuracy (%)"})
    assert list(table.frame.columns) == ["teacher epoch", "teacher test accuracy (%)", "student", "seeds"]
    assert table.frame.iloc[0].tolist() == ["1", "98.30 ± 0.14", "98.34 ± 0.02", "3"]
    assert table.frame.iloc[1].tolist() == ["2", "98.90", MISSING, MISSING]
    html = table._repr_html_()
    assert "NaN" not in html and "nan" not in html.lower().replace("span", "")
    assert "<th>teacher epoch</th>" in html and "dataframe" in html  # pandas' table, no index column
    assert "<tbody>\n    <tr>\n      <td>1</td>" in html
    assert "NaN" not in repr(table)


def test_space_separated_and_plain_pairs_and_scale() -> None:
    frame = pd.DataFrame({"arm": ["KD"], "test_accuracy mean": [0.98573], "test_accuracy std": [0.00021],
                          "mean": [0.5], "std": [0.1]})
    table = readable(frame, scale=100)
    assert list(table.frame.columns) == ["arm", "test accuracy", "mean ± std"]
    assert table.frame.iloc[0].tolist() == ["KD", "98.57 ± 0.02", "50.00 ± 10.00"]


def test_mean_std_text() -> None:
    assert mean_std_text(98.94, 0.031) == "98.94 ± 0.03"
    assert mean_std_text(98.94, None, digits=1) == "98.9"
    assert mean_std_text(math.nan, 0.1) == MISSING


def test_accuracy_std_pairs_and_typographic_minus() -> None:
    frame = pd.DataFrame({"teacher": ["digits"], "test_accuracy": [99.11], "test_std": [0.017], "gain": [-0.456]})
    table = readable(frame)
    assert list(table.frame.columns) == ["teacher", "test accuracy", "gain"]
    assert table.frame.iloc[0].tolist() == ["digits", "99.11 ± 0.02", "−0.46"]
