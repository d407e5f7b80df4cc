"""Smoke builds draw their findings from the recorded full-profile results, never from the smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdcourse.course import findings, results
from kdcourse.studies.common import json_records


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    full = pd.DataFrame({"seed": [0, 1, 2], "arm": ["kd"] * 3, "accuracy": [0.991, 0.992, 0.993]}).set_index(["seed", "arm"])
    results.save_results("chapter", {"runs": json_records(full), "best_rank": 48}, profile="full", seeds=[0, 1, 2], wall_seconds=1.0)
    return full


def test_smoke_findings_are_the_recorded_rows(recorded: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    live = pd.DataFrame({"seed": [0], "arm": ["kd"], "accuracy": [0.41]}).set_index(["seed", "arm"])
    shown = findings.frame("chapter", "runs", "smoke", live=live)
    pd.testing.assert_frame_equal(shown, recorded, check_dtype=False)
    assert "Recorded full-profile results" in capsys.readouterr().out  # the note is displayed
    assert findings.value("chapter", "best_rank", "smoke", live=float("nan")) == 48


def test_full_profile_findings_are_the_live_run(recorded: pd.DataFrame) -> None:
    live = pd.DataFrame({"accuracy": [0.5]})
    assert findings.frame("chapter", "runs", "full", live=live) is live
    assert findings.value("chapter", "best_rank", "full", live=7) == 7
    assert findings.source_note("chapter", "full") is None


def test_a_missing_record_names_the_file_and_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"full[/\\]nothing\.json.*kdcourse execute nothing --profile full"):
        findings.frame("nothing", "runs", "smoke", live=pd.DataFrame())


def test_a_missing_table_is_named(recorded: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="no table 'grid'"):
        findings.frame("chapter", "grid", "smoke", live=pd.DataFrame())


def test_smoke_output_is_labelled(capsys: pytest.CaptureFixture[str]) -> None:
    findings.show_smoke_run("smoke", "teacher 46.8 %", what="the MNIST study")
    out = capsys.readouterr().out
    assert "Smoke run: proof that the code runs" in out and "teacher 46.8 %" in out
    findings.show_smoke_run("full", "teacher 99.3 %")
    assert "Smoke run" not in capsys.readouterr().out


def test_every_finished_chapter_has_its_recorded_results() -> None:
    """The book's smoke build needs a recorded full-profile file for each experiment chapter."""
    book = Path(__file__).resolve().parents[1] / "book"
    for chapter in ("mnist_distillation", "mnist_takd", "mnist_eskd", "mnist_subclass", "nuclear_norm", "mhist_transfer", "tl_kd"):
        payload = json.loads((book / "results" / "full" / f"{chapter}.json").read_text())
        assert payload["provenance"]["profile"] == "full" and len(payload["provenance"]["seeds"]) >= 3
        text = (book / f"{chapter}.md").read_text()
        # the chapter, or a module of its study that it imports, reads its findings through kdcourse.course.findings
        studies = book.parent / "kdcourse" / "studies"
        own = [path.read_text() for path in studies.rglob("*.py")
               if f"kdcourse.studies.{path.stem}" in text or f"import {path.stem}" in text
               or (path.parent != studies and f"import {path.parent.name}" in text)]
        assert any("findings.frame(" in source or "findings.value(" in source for source in [text, *own]), \
            f"{chapter} does not draw its findings through kdcourse.course.findings"


def test_device_is_the_recorded_runs_in_smoke_and_this_machines_in_full(recorded: pd.DataFrame) -> None:
    from kdcourse.provenance import device_description

    assert findings.device("chapter", "smoke") == findings.recorded("chapter")["provenance"]["device"]
    assert findings.device("chapter", "full") == device_description()
