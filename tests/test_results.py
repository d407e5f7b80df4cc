"""Tests of kdcourse.results: result files with their provenance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdcourse.results import list_results, load_results, results_dir, save_results


@pytest.fixture(autouse=True)
def results_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KDCOURSE_RESULTS", str(tmp_path))
    return tmp_path


def test_save_then_load_round_trip_with_provenance(results_root: Path) -> None:
    results = {"summary": "student 97.1 %", "tables": {"accuracy": [{"model": "student", "acc": 0.971}]}}
    path = save_results("mnist", results, profile="full", seeds=[0, 1, 2], wall_seconds=123.456)
    assert path == results_root / "full" / "mnist.json" == results_dir("full") / "mnist.json"
    record = load_results("mnist", "full")
    assert record["results"] == results
    provenance = record["provenance"]
    assert {"commit", "device", "date", "seeds", "wall_seconds"} <= set(provenance)
    assert provenance["seeds"] == [0, 1, 2]
    assert provenance["wall_seconds"] == pytest.approx(123.5)
    assert provenance["profile"] == "full"


def test_load_missing_results_names_the_file(results_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(results_root / "full" / "absent.json"))):
        load_results("absent", "full")


def test_list_results_lists_saved_names_per_profile() -> None:
    assert list_results("full") == []
    for name in ("b", "a"):
        save_results(name, {}, profile="full", seeds=[0], wall_seconds=1.0)
    save_results("c", {}, profile="smoke", seeds=[0], wall_seconds=1.0)
    assert list_results("full") == ["a", "b"]
    assert list_results("smoke") == ["c"]
