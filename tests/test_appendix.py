"""Tests of kdcourse.course.appendix: a result file's provenance and tables in words."""

from __future__ import annotations

from kdcourse.course import appendix

RECORD = {
    "provenance": {"commit": "abc1234", "device": "cpu", "date": "2026-12-01T10:20:30", "seeds": [0, 1, 2],
                   "wall_seconds": 90.0, "torch": "2.5.0"},
    "training": {"commits": ["abc1234", "def5678"], "devices": ["cpu"], "first": "2026-11-30T08:00:00",
                 "last": "2026-12-01T09:59:59", "train_seconds": 600.0, "networks": 4},
}


def _rows(table: appendix.tables.Table) -> dict[str, list[str]]:
    return {row[0]: list(row[1:]) for row in table.frame.itertuples(index=False)}


def test_provenance_table_puts_training_beside_the_record() -> None:
    rows = _rows(appendix.provenance_table(RECORD))
    assert rows["commit"] == ["abc1234, def5678", "abc1234"]
    assert rows["dates (UTC)"] == ["2026-11-30 08:00 to 2026-12-01 09:59", "2026-12-01 10:20"]
    assert rows["seeds"] == ["0, 1, 2", "0, 1, 2"]
    assert rows["networks"][0] == "4"
    assert rows["time"][0].endswith("of training epochs") and rows["time"][1].endswith("wall time")


def test_a_record_without_training_provenance_says_so() -> None:
    rows = _rows(appendix.provenance_table({"provenance": RECORD["provenance"]}))
    assert rows["commit"][0] == "not recorded" and rows["time"][0] == "—" and rows["dates (UTC)"][0] == "—"


def test_recorded_table_of_fractions_is_in_per_cent_with_words_for_its_columns() -> None:
    table = appendix.recorded_table("accuracy (fraction)", [{"temperature": 4, "accuracy_mean": 0.5, "accuracy_std": 0.01}])
    assert "%" in table.caption and "fraction" not in table.caption
    assert list(table.frame.columns) == ["T", "accuracy"]
    assert table.frame["accuracy"].iloc[0] == "50.00 ± 1.00"
