"""Tests of kdcourse.course.results: result files with their provenance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdcourse.course.results import list_results, load_results, results_dir, save_results


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


def test_training_provenance_follows_fit_across_a_resume(tmp_path: Path) -> None:
    """The training sessions live in the checkpoint: a re-render that only resumes finished runs still
    names the training's commit and seconds, not its own."""
    import torch

    from kdcourse import provenance
    from kdcourse.data import TensorBatches
    from kdcourse.train import fit

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    checkpoint = tmp_path / "run.pt"
    provenance.record_start()
    torch.manual_seed(0)
    first = fit(torch.nn.Linear(4, 2), TensorBatches(x, y, batch_size=16), epochs=2, checkpoint=checkpoint,
                val_data=(x, y), progress=False)
    assert len(first.sessions) == 1 and first.sessions[0]["epochs"] == 2
    assert first.sessions[0]["commit"] == provenance.code_commit()
    trained = provenance.training_provenance()
    assert trained["networks"] == 1 and trained["train_seconds"] == pytest.approx(first.train_seconds, abs=0.1)
    assert trained["commits"] == [provenance.code_commit()] and trained["first"] <= trained["last"]

    provenance.record_start()  # a new chapter run resumes the finished checkpoint
    torch.manual_seed(0)  # the same run: the same initial weights
    again = fit(torch.nn.Linear(4, 2), TensorBatches(x, y, batch_size=16), epochs=2, checkpoint=checkpoint,
                val_data=(x, y), progress=False)
    assert again.sessions == first.sessions
    path = save_results("r", {}, profile="full", seeds=[0], wall_seconds=0.5)
    record = load_results("r", "full")
    assert path.is_file() and record["training"] == trained
    assert record["provenance"]["wall_seconds"] == 0.5


def test_dirty_code_is_named_by_the_hash_of_its_diff(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcourse import provenance

    def fake_git(*args: str) -> str:
        return "abc1234\n" if args[0] == "rev-parse" else diffs.pop(0)

    monkeypatch.setattr(provenance, "_git", fake_git)
    diffs = ["", "--- a/x\n+++ b/x\n", "--- a/x\n+++ b/y\n"]
    assert provenance._git_commit() == "abc1234"
    one, two = provenance._git_commit(), provenance._git_commit()
    assert re.fullmatch(r"abc1234-dirty\+[0-9a-f]{8}", one) and one != two


RECORDED = Path(__file__).resolve().parents[1] / "book" / "results" / "full"


@pytest.mark.parametrize("name", list_results("full", RECORDED))
def test_committed_full_profile_results_name_committed_code(name: str) -> None:
    """Every recorded full-profile file names a clean commit for its render and its training."""
    record = load_results(name, folder=RECORDED)
    assert record.get("training", {}).get("commits"), f"{name}: no training commit recorded"
    commits = [record["provenance"]["commit"], *record["training"]["commits"]]
    assert not [c for c in commits if "dirty" in c or c == "unknown"], f"{name}: recorded from uncommitted code {commits}"


def _strings(value: object) -> list[str]:
    """Every string inside a JSON value (keys and values, at any depth)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings(key), *_strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@pytest.mark.parametrize("name", list_results("full", RECORDED))
def test_committed_results_name_no_folder_of_the_machine_that_wrote_them(name: str) -> None:
    """A record travels with the book: files are named, never located on the recording machine."""
    record = load_results(name, folder=RECORDED)
    located = [s for s in _strings(record) if re.match(r"^(/|[A-Za-z]:\\)", s)]
    assert not located, f"{name}: absolute paths in the record: {located[:3]}"
