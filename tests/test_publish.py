"""Tests of kdcourse.course.publish: the notebooks behind the launch buttons, and the buttons of a built site."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from kdcourse.course import book, build
from kdcourse.course.publish import INSTALL_TAG, NOTEBOOKS_BRANCH, export_notebooks, launch_targets


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    executed = tmp_path_factory.mktemp("executed")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", outputs=[
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)])])
    nbformat.write(nb, executed / "theory.ipynb")  # an executed chapter: exported with its outputs
    export_notebooks(out, executed_dir=executed, repository="https://example.org/kdcourse.git", ref="0123abc")
    return out


def test_every_chapter_is_exported_with_the_install_cell_first(export: Path) -> None:
    chapters = book.notebook_chapters()
    assert sorted(p.name for p in (export / "book").glob("*.ipynb")) == sorted(f"{c.stem}.ipynb" for c in chapters)
    for chapter in chapters:
        cells = nbformat.read(export / "book" / f"{chapter.stem}.ipynb", as_version=4).cells
        assert cells[0].metadata["tags"] == [INSTALL_TAG]
        assert "https://example.org/kdcourse.git" in cells[0].source and "0123abc" in cells[0].source
        assert INSTALL_TAG not in str([c.metadata for c in cells[1:]])
    theory = nbformat.read(export / "book" / "theory.ipynb", as_version=4)
    assert theory.cells[1].outputs[0]["data"]["text/plain"] == "2"  # the executed notebook, not the source
    assert "torch" in (export / "requirements.txt").read_text()


def _install_cell(export: Path) -> str:
    return nbformat.read(export / "book" / "intro.ipynb", as_version=4).cells[0].source


def test_the_install_cell_does_nothing_where_kdcourse_is_installed(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nothing may run where kdcourse is installed: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(_install_cell(export), {})


def test_the_install_cell_fetches_the_course_at_its_commit_where_it_is_missing(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda command, **_: commands.append(command))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kdcourse" else real_find_spec(name, *a))
    monkeypatch.setenv("KDCOURSE_RESULTS", "unchanged")
    exec(_install_cell(export), {})
    assert commands[0][:3] == ["git", "clone", "--quiet"] and commands[0][3:] == ["https://example.org/kdcourse.git", "kdcourse-src"]
    assert commands[1][-1] == "0123abc"
    assert commands[2][-4:] == ["install", "--quiet", "-e", "kdcourse-src"]
    assert os.environ["KDCOURSE_RESULTS"] == str(tmp_path / "kdcourse-src" / "book" / "results")


def test_every_launch_button_of_the_built_site_opens_an_exported_notebook(export: Path, tmp_path: Path) -> None:
    chapters = book.notebook_chapters()
    for chapter in chapters:
        book.convert_chapter(chapter, tmp_path / "notebooks")
    index = build.build_html(tmp_path / "notebooks", out_dir=tmp_path / "site")
    targets = launch_targets(index.parent)
    exported = {p.relative_to(export).as_posix() for p in export.rglob("*.ipynb")}
    assert len(targets) == 2 * len(chapters)  # a Colab and a Binder button on every notebook page
    for url, opened in targets.items():
        assert f"branch:{NOTEBOOKS_BRANCH}" in opened, url
        paths = opened - {f"branch:{NOTEBOOKS_BRANCH}"}
        assert len(paths) == 1 and paths <= exported, f"{url} opens {paths}, which the export does not produce"
