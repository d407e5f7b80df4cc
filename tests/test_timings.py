"""Tests of kdcourse.course.timings: every time the README and the book state is read from a recorded file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdcourse import stats

from kdcourse.course import book, results, timings

NOTEBOOK = "---\nkernelspec:\n  name: python3\n  display_name: Python 3\n  language: python\n---\n\n# {}\n"


def _tree(root: Path) -> Path:
    (root / "book" / "results" / "full").mkdir(parents=True)
    (root / "book" / "results" / "timings").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/study\n")
    (root / "book" / "intro.md").write_text("# Intro\n")  # plain page: not a notebook chapter
    (root / "book" / "study.md").write_text(NOTEBOOK.format("Study"))
    full = {"provenance": {"commit": "abc1234", "device": "CPU: Some CPU, 2 threads", "date": "2026-12-01T10:00:00+00:00",
                           "seeds": [0, 1, 2], "wall_seconds": 95.0},
            "training": {"networks": 4, "commits": ["abc1234"], "devices": ["CPU: Some CPU, 2 threads"],
                         "first": "2026-12-01T09:00:00+00:00", "last": "2026-12-01T09:40:00+00:00", "train_seconds": 2400.0},
            "results": {}}
    (root / "book" / "results" / "full" / "study.json").write_text(json.dumps(full))
    smoke = {"provenance": {"commit": "abc1234", "device": "CPU: Some CPU, 2 threads", "date": "2026-12-02T10:00:00+00:00",
                            "seeds": [], "wall_seconds": 300.0},
             "results": {"precision": "fp32", "book_seconds": 130.0, "test_seconds": 170.0, "tests_passed": 12,
                         "chapter_smoke_seconds": {"study": 21.4}}}
    (root / "book" / "results" / "timings" / "fp32.json").write_text(json.dumps(smoke))
    (root / "README.md").write_text(f"# R\n\n{timings.README_START}\nstale\n{timings.README_END}\n\n"
                                    f"{timings.BENCH_START}\n{timings.BENCH_END}\n\nafter\n")
    return root


def test_chapter_and_command_times_come_from_the_records(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    chapters = timings.chapter_times(root)
    assert chapters.to_dict("records") == [{
        "chapter": "study", "smoke, fp32": "21 s", "full: training of its networks": "40.0 min",
        "trained on": "Some CPU, 2 threads", "full: run that wrote the results": "95 s",
    }]
    commands = timings.command_times(root).to_dict("records")
    assert commands == [{"precision": "fp32", "machine": "Some CPU, 2 threads", "date": "2026-12-02",
                         "kdcourse book": "2.2 min", "kdcourse test": "2.8 min", "tests passed": 12}]


def test_update_readme_rewrites_only_the_generated_section(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert timings.update_readme(root)
    text = (root / "README.md").read_text()
    assert "stale" not in text and "| study | 21 s | 40.0 min |" in text and text.endswith("\n\nafter\n")
    assert not timings.update_readme(root)  # idempotent
    (root / "README.md").write_text("# no markers\n")
    assert "No benchmark recorded yet" in text
    with pytest.raises(ValueError, match="lacks the markers"):
        timings.update_readme(root)


def test_the_readme_timings_match_the_recorded_files() -> None:
    root = book.repo_root()
    readme = (root / "README.md").read_text(encoding="utf-8")
    for section in (timings.readme_section(root), timings.bench_section(root)):
        assert section in readme, "README.md's generated sections are stale: run `kdcourse timings readme`"


def test_the_introduction_states_the_one_rule_for_effects() -> None:
    intro = (book.repo_root() / "book" / "intro.md").read_text(encoding="utf-8")
    assert stats.RULE in intro and stats.JOINT_RULE in intro


def test_minutes() -> None:
    assert timings.minutes(48.4) == "48 s" and timings.minutes(2173.5) == "36.2 min" and timings.minutes(None) == "—"


def test_the_bench_summary_compares_the_plain_student_with_the_stacked_one() -> None:
    root = book.repo_root()
    rows = results.load_results("training_steps", folder=root / "book" / "results" / "bench")["results"]["rows"]
    plain = next(r for r in rows if r["model"] == "one student" and r["precision"] == "fp32")
    stacked = rows[-1]
    assert "stacked" in stacked["model"]
    ratio = plain["seconds_per_epoch_per_model"] / stacked["seconds_per_epoch_per_model"]
    assert f"a student's epoch costs {ratio:.1f}× less here" in timings.bench_section(root)
