"""The ``kdcourse`` command run as a user runs it, in a fresh process: parameters a chapter does not
have are refused before anything runs, and impossible study settings stop the chapter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

import kdcourse
from kdcourse.course import book

REPO = Path(kdcourse.__file__).resolve().parents[1]


def kdcourse_command(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdcourse", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_an_unknown_parameter_is_refused_with_the_chapters_names_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "executed"
    done = kdcourse_command("execute", "theory", "--output", str(out), "-p", "NOT_A_PARAM=1")
    assert done.returncode == 1
    assert "NOT_A_PARAM" in done.stderr and "theory: PROFILE" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "theory.ipynb").exists()  # refused before any kernel started


def test_a_typo_of_a_parameter_names_the_right_one(tmp_path: Path) -> None:
    done = kdcourse_command("execute", "mnist_takd", "--output", str(tmp_path), "-p", "SEED=(0, 1)")
    assert done.returncode == 1 and "SEED" in done.stderr and "mnist_takd: PROFILE, SEEDS" in done.stderr
    assert not (tmp_path / "mnist_takd.ipynb").exists()


def test_repeated_seeds_stop_the_chapter(tmp_path: Path) -> None:
    """`-p SEEDS=(0, 0)` once printed "± 0.00" over two identical seeds and exited 0."""
    done = kdcourse_command("execute", "mnist_takd", "--output", str(tmp_path), "-p", "SEEDS=(0, 0)")
    assert done.returncode == 1
    assert "seeds must be a tuple of at least one distinct integer" in done.stderr


def test_each_chapter_gets_only_the_parameters_it_names(tmp_path: Path) -> None:
    """Chapters run together share -p: a name one of them lacks is not written into it."""
    (tmp_path / "_config.yml").write_text("title: test\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/a\nchapters:\n  - file: book/b\n")
    (tmp_path / "book").mkdir()
    front = "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n"
    cell = "```{code-cell} ipython3\n:tags: [parameters]\n\n%s\n```\n\n```{code-cell} ipython3\nprint({k: v for k, v in sorted(globals().items()) if k.isupper()})\n```\n"
    (tmp_path / "book" / "a.md").write_text(front + "# A\n\n" + cell % "PROFILE = None\nEXTRA: int = 1")
    (tmp_path / "book" / "b.md").write_text(front + "# B\n\n" + cell % "PROFILE = None")
    assert [book.chapter_parameters(tmp_path / "book" / f"{n}.md") for n in "ab"] == [["PROFILE", "EXTRA"], ["PROFILE"]]
    out = tmp_path / "executed"
    done = kdcourse_command("execute", "a", "b", "--output", str(out), "-p", "EXTRA=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = {n: nbformat.read(out / f"{n}.ipynb", as_version=4).cells[-1].outputs[0]["text"] for n in "ab"}
    assert printed == {"a": "{'EXTRA': 3, 'PROFILE': None}\n", "b": "{'PROFILE': None}\n"}


def _one_chapter_book(root: Path, code: str) -> Path:
    """A book at ``root`` with one notebook chapter running ``code`` and one passing unit test."""
    root.mkdir()
    (root / "_config.yml").write_text("title: test\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/a\n")
    (root / "book").mkdir()
    (root / "book" / "a.md").write_text(
        "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n# A\n\n"
        f"```{{code-cell}} ipython3\n{code}\n```\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_one.py").write_text("def test_one():\n    assert True\n")
    return root


def test_kdcourse_test_keeps_the_chapters_runs_in_kdcourse_runs_and_removes_its_own(tmp_path: Path) -> None:
    """As the README says: `kdcourse test` removes its smoke checkpoints unless $KDCOURSE_RUNS is set."""
    root = _one_chapter_book(tmp_path / "repo", "from kdcourse.paths import runs_dir\n"
                             "runs_dir().mkdir(parents=True, exist_ok=True)\n(runs_dir() / 'checkpoint').write_text('weights')")
    kept = tmp_path / "kept runs"
    env = {k: v for k, v in os.environ.items() if k != "KDCOURSE_RUNS"}
    done = subprocess.run([sys.executable, "-m", "kdcourse", "test", "-q", "-p", "no:cacheprovider"], cwd=root,
                          env={**env, "KDCOURSE_RUNS": str(kept)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "2 passed" in done.stdout  # the unit test and the chapter
    assert (kept / "checkpoint").read_text() == "weights"
    done = subprocess.run([sys.executable, "-m", "kdcourse", "test", "-q", "-p", "no:cacheprovider"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-2000:]
    assert not (root / "_build" / "nbval" / "runs").exists()
