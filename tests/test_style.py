"""Tests of kdcourse.course.style, and the book's chapters measured against its targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcourse.course import book, style

FRONT_MATTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""
LONG_CALL = "result = dict(" + ", ".join(f"argument_{i}={i}" for i in range(9)) + ")"


def chapter(tmp_path: Path, *cells: str, prose: str = "Some prose.") -> Path:
    """A MyST chapter of one Markdown cell followed by the code ``cells``."""
    path = tmp_path / "c.md"
    body = "".join(f"\n```{{code-cell}} ipython3\n{cell}\n```\n" for cell in cells)
    path.write_text(f"{FRONT_MATTER}\n# C\n\n{prose}\n{body}", encoding="utf-8")
    return path


def test_measures_count_non_blank_lines_cells_functions_and_long_lines(tmp_path: Path) -> None:
    function = "def f(x):\n\n" + "".join(f"    x += {i}\n" for i in range(10)) + "    return x"
    path = chapter(tmp_path, "%matplotlib inline\nimport os\n\nx = 1", function, LONG_CALL,
                   prose="Line one.\n\nLine two.")
    measures = style.measure_chapter(path)
    assert (measures.code_lines, measures.prose_lines) == (3 + 12 + 1, 3)
    assert (measures.longest_cell, measures.longest_function, measures.long_lines) == (12, 12, 1)
    failed = measures.failures()
    assert failed == ["16 code lines > 3 prose lines", "a function of 12 lines > 10",
                      "1 code lines over 88 characters"]


def test_target_failures_name_each_chapter_with_its_numbers(tmp_path: Path) -> None:
    good = chapter(tmp_path, "x = 1", prose="One.\n\nTwo.")
    good = good.rename(tmp_path / "good.md")
    bad = chapter(tmp_path, "\n".join(f"x{i} = {i}" for i in range(26)))
    assert style.target_failures([good, bad]) == [
        "c: 26 code lines > 2 prose lines; a code cell of 26 lines > 25"
    ]


def test_format_chapter_fits_code_to_the_column_and_keeps_the_rest(tmp_path: Path) -> None:
    path = chapter(tmp_path, LONG_CALL, "import torch\ntorch.manual_seed(0);", prose="A *very*   long,  unwrapped line.")
    before = path.read_text(encoding="utf-8")
    assert style.format_chapter(path, check=True)
    assert path.read_text(encoding="utf-8") == before  # check changes nothing
    assert style.format_chapter(path)
    after = path.read_text(encoding="utf-8")
    assert after.startswith(FRONT_MATTER) and "A *very*   long,  unwrapped line." in after
    assert "torch.manual_seed(0);" in after  # the semicolon that hides a cell's output stays
    assert style.measure_chapter(path).long_lines == 0
    assert not style.format_chapter(path, check=True)  # formatting again changes nothing


def _chapters() -> list[Path]:
    return book.notebook_chapters(book.repo_root())


def test_no_chapter_code_line_is_over_88_characters() -> None:
    long = {path.stem: style.measure_chapter(path).long_lines for path in _chapters()}
    offending = [f"{name}: {count} lines" for name, count in long.items() if count]
    if offending:
        pytest.fail(f"code lines over {style.LINE_LENGTH} characters (run `kdcourse format`, then "
                    f"shorten comments and strings by hand): " + "; ".join(offending), pytrace=False)


def test_every_chapter_meets_the_book_targets() -> None:
    """Prose first (code lines ≤ prose lines), code cells of at most 25 lines, functions of at most 10."""
    failures = style.target_failures(_chapters())
    if failures:
        pytest.fail("chapters that miss the book's targets:\n" + "\n".join(failures), pytrace=False)


def test_every_chapter_is_formatted() -> None:
    unformatted = [path.stem for path in _chapters() if style.format_chapter(path, check=True)]
    if unformatted:
        pytest.fail(f"code cells that ruff format changes; run: kdcourse format {' '.join(unformatted)}",
                    pytrace=False)
