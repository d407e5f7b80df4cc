"""How a chapter's code reads: formatting its code cells and measuring it against the book's targets.

The chapters are Jupytext MyST notebooks. :func:`format_chapter` pipes a chapter's code cells through
``ruff format`` (as one ``py:percent`` script, the way ``jupytext --pipe`` does) at the book's
column width, :data:`LINE_LENGTH`. :func:`measure_chapter` counts what the book promises a reader:
prose first (no more code lines than prose lines), short cells, short functions and code that fits
the column; :func:`target_failures` says, per chapter, which of those promises it breaks.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LINE_LENGTH",
    "MAX_CELL_LINES",
    "MAX_FUNCTION_LINES",
    "ChapterMeasures",
    "measure_chapter",
    "target_failures",
    "ruff_command",
    "format_chapter",
]

LINE_LENGTH = 88  # characters of a code line: what the book's code column shows without scrolling
MAX_CELL_LINES = 25  # non-blank lines of one code cell
MAX_FUNCTION_LINES = 10  # non-blank lines of a function defined in a chapter, its signature included
# IPython magics and shell escapes, which are not Python
_MAGIC = re.compile(r"^\s*[%!]")


@dataclass(frozen=True)
class ChapterMeasures:
    """Counts of non-blank lines of one chapter (see :func:`measure_chapter`)."""

    name: str
    code_lines: int
    prose_lines: int
    longest_cell: int
    longest_function: int
    long_lines: int

    def failures(self) -> list[str]:
        """The targets this chapter misses, each with its numbers (``[]`` when it meets them all)."""
        failed = []
        if self.code_lines > self.prose_lines:
            failed.append(f"{self.code_lines} code lines > {self.prose_lines} prose lines")
        if self.longest_cell > MAX_CELL_LINES:
            failed.append(f"a code cell of {self.longest_cell} lines > {MAX_CELL_LINES}")
        if self.longest_function > MAX_FUNCTION_LINES:
            failed.append(
                f"a function of {self.longest_function} lines > {MAX_FUNCTION_LINES}"
            )
        if self.long_lines:
            failed.append(f"{self.long_lines} code lines over {LINE_LENGTH} characters")
        return failed


def _function_lengths(source: str) -> list[int]:
    """Non-blank lines of every function defined in a code cell (magics read as blank lines)."""
    lines = ["" if _MAGIC.match(line) else line for line in source.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return []
    functions = (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return [sum(bool(line.strip()) for line in lines[f.lineno - 1 : f.end_lineno]) for f in functions]


def measure_chapter(path: Path) -> ChapterMeasures:
    """Measure the Jupytext chapter at ``path``: non-blank code and Markdown lines, the longest code
    cell and the longest function (non-blank lines), and the code lines over :data:`LINE_LENGTH`."""
    import jupytext

    code = prose = longest_cell = longest_function = long_lines = 0
    for cell in jupytext.read(path).cells:
        lines = [line for line in cell.source.splitlines() if line.strip()]
        if cell.cell_type == "markdown":
            prose += len(lines)
        elif cell.cell_type == "code":
            code += len(lines)
            longest_cell = max(longest_cell, len(lines))
            longest_function = max([longest_function, *_function_lengths(cell.source)])
            long_lines += sum(len(line) > LINE_LENGTH for line in lines)
    return ChapterMeasures(Path(path).stem, code, prose, longest_cell, longest_function, long_lines)


def target_failures(paths: Iterable[Path]) -> list[str]:
    """One line per chapter of ``paths`` that misses a target: its name and every miss with numbers."""
    lines = []
    for path in paths:
        failed = measure_chapter(path).failures()
        if failed:
            lines.append(f"{Path(path).stem}: {'; '.join(failed)}")
    return lines


def ruff_command() -> list[str]:
    """The ``ruff`` executable (of the ``ruff`` package in this environment, else on ``PATH``)."""
    try:
        from ruff.__main__ import find_ruff_bin

        return [str(find_ruff_bin())]
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff")
        if found is None:
            raise RuntimeError(
                'ruff is not installed; install the test extras: pip install -e ".[test]"'
            ) from None
        return [found]


def format_chapter(path: Path, check: bool = False) -> bool:
    """Format the code cells of the chapter at ``path`` with ``ruff format`` at :data:`LINE_LENGTH`.

    Returns whether formatting changes a code cell. With ``check`` the file is left untouched; otherwise
    it is rewritten as MyST, its front matter kept. Markdown cells and cell metadata are never changed.
    """
    import shlex

    import jupytext
    from jupytext.cli import pipe_notebook

    path = Path(path)
    notebook = jupytext.read(path)
    command = [*ruff_command(), "format", "--quiet", f"--line-length={LINE_LENGTH}", "{}"]
    command_line = " ".join(part if part == "{}" else shlex.quote(part) for part in command)
    # as an .ipynb, which ruff formats cell by cell and where it keeps a cell's closing semicolon
    formatted = pipe_notebook(jupytext.read(path), command_line, fmt="ipynb", quiet=True)
    before = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    after = [cell.source for cell in formatted.cells if cell.cell_type == "code"]
    if len(before) != len(after):
        raise RuntimeError(f"formatting {path} changed its number of code cells; left it untouched")
    changed = before != after
    if changed and not check:
        code = iter(after)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.source = next(code)
        text = jupytext.writes(notebook, fmt="md:myst")
        # the front matter stays as written (jupytext would add its own version to it)
        path.write_text(_front_matter(path.read_text(encoding="utf-8")) + _body(text), encoding="utf-8")
    return changed


def _front_matter(text: str) -> str:
    """The YAML front matter of a Markdown text, its closing ``---`` line included ("" if none)."""
    match = re.match(r"---\n.*?\n---\n", text, flags=re.S)
    return match.group(0) if match else ""


def _body(text: str) -> str:
    """A Markdown text without its front matter."""
    return text[len(_front_matter(text)) :]
