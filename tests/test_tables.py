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


def test_paired_effects_one_row_per_effect_with_key_columns() -> None:
    from kdcourse.course.tables import paired_effects
    from kdcourse.stats import paired_effect

    gain = paired_effect([0.97, 0.95, 0.98], [0.96, 0.96, 0.95])  # +1, −1, +3 points
    table = paired_effects({("kd", "scratch"): gain}, ["student", "against"], caption="c", p_digits=2)
    row = table.frame.iloc[0]
    assert list(table.frame.columns) == ["student", "against", "difference (points, mean ± std over seeds)",
                                         "95 % interval (points)", "p (paired t)", "seeds", "verdict"]
    assert (row["student"], row["against"], row["seeds"], row["verdict"]) == ("kd", "scratch", "3", "within noise")
    assert row["difference (points, mean ± std over seeds)"] == "+1.00 ± 2.00" and row["p (paired t)"] == f"{gain.p_value:.2g}"
    assert row["95 % interval (points)"].startswith("−") and table.caption == "c"
    single = paired_effects({"T = 4": gain}, ["temperature"], seeds=False).frame
    assert list(single.columns)[0] == "temperature" and "seeds" not in single.columns
