"""Tests of kdcourse.course.book (finding, converting and executing chapters) and kdcourse.course.build
(staging and building the HTML book)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdcourse.course import book, build

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


def notebook(*cells: str) -> str:
    """A Jupytext MyST notebook whose first code cell is tagged ``parameters``."""
    body = "```{code-cell} ipython3\n:tags: [parameters]\n\nPROFILE = None\n```\n"
    for cell in cells:
        body += f"\n```{{code-cell}} ipython3\n{cell}\n```\n"
    return FRONT_MATTER + "\n# A chapter\n\n" + body


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A book with a plain root page, notebook chapters b and a (in that order), and a plain page p."""
    (tmp_path / "_config.yml").write_text("title: test\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/b\n  - file: book/p\n  - file: book/a.md\n"
    )
    pages = tmp_path / "book"
    pages.mkdir()
    (pages / "intro.md").write_text("# Intro\n")
    (pages / "p.md").write_text("---\ntitle: plain\n---\n# Plain page\n")
    (pages / "b.md").write_text(notebook("x = 1"))
    (pages / "a.md").write_text(
        notebook(
            "import os\nfrom pathlib import Path\n"
            "env = [os.environ[k] for k in ('KDCOURSE_PROFILE', 'KDCOURSE_PROGRESS', 'KDCOURSE_RESULTS')]\n"
            "Path('seen.txt').write_text(' '.join([str(PROFILE), *env]))",
            "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
        )
    )
    return tmp_path


def test_notebook_chapters_in_toc_order_without_plain_pages(repo: Path) -> None:
    assert book.notebook_chapters(repo) == [repo / "book" / "b.md", repo / "book" / "a.md"]


def test_find_chapters_accepts_names_with_or_without_folder_and_suffix(repo: Path) -> None:
    assert book.find_chapters(["a", "book/b.md", "book/a"], repo) == [repo / "book" / n for n in ("a.md", "b.md", "a.md")]
    with pytest.raises(ValueError, match="no notebook chapter 'p'"):
        book.find_chapters(["p"], repo)


def test_repo_root_walks_up_from_the_current_directory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "book")
    assert book.repo_root() == repo.resolve()


def test_convert_chapter_keeps_the_parameters_tag(repo: Path, tmp_path: Path) -> None:
    import nbformat

    out = book.convert_chapter(repo / "book" / "a.md", tmp_path / "converted")
    assert out == tmp_path / "converted" / "a.ipynb"
    nb = nbformat.read(out, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    assert nb.metadata.kernelspec.name == "python3"


def test_execute_chapters_passes_the_profile_and_records_timings(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "executed"
    timings = book.execute_chapters(["a"], profile="full", out_dir=out, root=repo)
    assert set(timings) == {"a"} and timings["a"] >= 0
    # papermill runs the chapter in book/ with the profile in the environment (PROFILE = None reads it)
    seen = (repo / "book" / "seen.txt").read_text().split()
    assert seen == ["None", "full", "0", str(repo / "book" / "results")]
    assert json.loads((out / "timings.json").read_text()) == {"a": timings["a"], "profile": "full"}
    # figures shown with plt.show() end up in the executed notebook (the book's figures come from there)
    import nbformat

    outputs = [o for cell in nbformat.read(out / "a.ipynb", as_version=4).cells for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_execute_chapters_names_the_failing_chapter(repo: Path, tmp_path: Path) -> None:
    (repo / "book" / "b.md").write_text(notebook("raise ValueError('boom')"))
    with pytest.raises(RuntimeError, match=r"chapter 'b' failed.*executed[/\\]b\.ipynb"):
        book.execute_chapters(["b"], out_dir=tmp_path / "executed", root=repo)
    assert (tmp_path / "executed" / "b.ipynb").is_file()


def test_build_html_refuses_without_executed_notebooks(repo: Path, tmp_path: Path) -> None:
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "b.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no executed notebook for a .*kdcourse execute a"):
        build.build_html(executed, root=repo)


def test_cli_reports_errors_without_a_traceback(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdcourse.course.cli import main

    monkeypatch.chdir(repo)
    assert main(["build-html"]) == 1
    assert "kdcourse execute b a" in capsys.readouterr().err
    assert main(["execute", "nope"]) == 1
    assert "no notebook chapter 'nope'" in capsys.readouterr().err


def test_staged_links_to_notebook_chapters_point_at_the_notebooks(tmp_path: Path) -> None:
    page = tmp_path / "intro.md"
    page.write_text("[a](a.md), [b](./a.md#part), [plain](p.md), [other](ab.md), {doc}`a`\n")
    build._retarget_links(tmp_path, ["a"])
    assert page.read_text() == "[a](a.ipynb), [b](./a.ipynb#part), [plain](p.md), [other](ab.md), {doc}`a`\n"


def test_cli_passes_parameters_to_the_chapters(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcourse.course.cli import main

    (repo / "book" / "b.md").write_text(
        FRONT_MATTER + "\n# B\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nPROFILE = None\nEXTRA = None\nSEEDS = None\n```\n"
        "\n```{code-cell} ipython3\nfrom pathlib import Path\nfrom kdcourse.course.profiles import resolve_profile\n"
        "Path('params.txt').write_text(repr((resolve_profile(PROFILE), EXTRA, SEEDS)))\n```\n"
    )
    monkeypatch.chdir(repo)
    assert main(["execute", "b", "--output", str(tmp_path / "out"), "-p", "EXTRA=False", "--param", "SEEDS=(0, 1)"]) == 0
    assert (repo / "book" / "params.txt").read_text() == "('smoke', False, [0, 1])"


def test_executed_notebooks_have_one_parameters_cell(repo: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import nbformat

    (repo / "book" / "b.md").write_text(
        FRONT_MATTER + "\n# B\n\nIntro.\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nPROFILE = None  # or 'full'\nEXTRA = None\n```\n"
        "\n```{code-cell} ipython3\nfrom kdcourse.course.profiles import resolve_profile\nprint(resolve_profile(PROFILE), EXTRA)\n```\n"
    )
    book.execute_chapters(["b"], out_dir=tmp_path / "out", root=repo, parameters={"EXTRA": 3})
    nb = nbformat.read(tmp_path / "out" / "b.ipynb", as_version=4)
    tagged = [cell for cell in nb.cells if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", []))]
    assert len(tagged) == 1 and tagged[0].metadata.tags == ["parameters"]
    # the profile came from the environment: the reader's line is untouched, the extra value folded in
    assert tagged[0].source == "PROFILE = None  # or 'full'\nEXTRA = 3  # set for this build"
    assert nb.cells[-1].outputs[0]["text"] == "smoke 3\n"
    assert nb.metadata["kdcourse"] == {"profile": "smoke"}
    assert "without encryption" not in capfd.readouterr().err


def test_smoke_notice_goes_under_the_title_of_smoke_pages_only() -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\n\nFirst paragraph.")])
    assert not build.add_smoke_notice(nb)  # no recorded profile: left alone
    nb.metadata["kdcourse"] = {"profile": "full"}
    assert not build.add_smoke_notice(nb)
    nb.metadata["kdcourse"] = {"profile": "smoke"}
    assert build.add_smoke_notice(nb)
    lines = nb.cells[0].source.splitlines()
    assert lines[0] == "# Title" and lines[2] == "```{warning}" and "smoke profile" in lines[3]
    assert lines[-1] == "First paragraph."
    page = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Recorded results")])
    page.metadata["kdcourse"] = {"profile": "smoke", "same_in_every_profile": True}
    assert not build.add_smoke_notice(page)  # its content does not depend on the profile


@pytest.mark.parametrize("bad", ["EXTRA", "PROFILE='full'", "EXTRA=not a literal", "1X=2"])
def test_cli_rejects_malformed_parameters(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from kdcourse.course.cli import main

    with pytest.raises(SystemExit):
        main(["execute", "b", "-p", bad])
    assert "NAME=VALUE" in capsys.readouterr().err or "literal" in capsys.readouterr().err


def test_chapters_run_side_by_side_one_per_device_and_last_ones_after(repo: Path, tmp_path: Path) -> None:
    """Two devices: chapters a and b overlap in time, each sees one device, and a runs_last chapter starts after both."""
    stamp = (
        "import os, time, json\nfrom pathlib import Path\nstart = time.time(); time.sleep(3)\n"
        "Path('{name}.json').write_text(json.dumps([os.environ['CUDA_VISIBLE_DEVICES'], start, time.time()]))"
    )
    (repo / "book" / "a.md").write_text(notebook(stamp.format(name="a")))
    (repo / "book" / "b.md").write_text(notebook(stamp.format(name="b")))
    (repo / "book" / "z.md").write_text(
        notebook(stamp.format(name="z")).replace("---\n\n# A chapter", "kdcourse:\n  runs_last: true\n---\n\n# A chapter", 1)
    )
    (repo / "_toc.yml").write_text((repo / "_toc.yml").read_text() + "  - file: book/z\n")
    out = tmp_path / "executed"
    timings = book.execute_chapters(profile="smoke", out_dir=out, root=repo, devices=["0", "1"])
    assert set(timings) == {"a", "b", "z"} and all((out / f"{n}.ipynb").is_file() for n in timings)
    (dev_a, start_a, end_a), (dev_b, start_b, end_b), (_, start_z, _) = (
        json.loads((repo / "book" / f"{n}.json").read_text()) for n in "abz")
    assert {dev_a, dev_b} == {"0", "1"}
    assert start_a < end_b and start_b < end_a  # side by side
    assert start_z >= max(end_a, end_b)
    assert json.loads((out / "timings.json").read_text())["profile"] == "smoke"


def test_a_failing_chapter_side_by_side_is_named_with_its_log(repo: Path, tmp_path: Path) -> None:
    (repo / "book" / "b.md").write_text(notebook("raise ValueError('boom')"))
    with pytest.raises(RuntimeError, match=r"(?s)chapter 'b' failed on device \d \(log: .*log\.txt\).*boom"):
        book.execute_chapters(profile="smoke", out_dir=tmp_path / "executed", root=repo, devices=["0", "1"])


def test_a_built_page_with_math_loads_mathjax_from_the_build(repo: Path, tmp_path: Path) -> None:
    """The book's own configuration: a page with a formula references a MathJax script of the site."""
    import re

    import nbformat

    real = book.repo_root()
    shutil.copy2(real / "_config.yml", repo / "_config.yml")
    shutil.copy2(real / "book" / "references.bib", repo / "book" / "references.bib")
    (repo / "book" / "p.md").write_text("# Plain page\n\nThe loss is $T^2 \\cdot \\mathrm{KL}$.\n")
    executed = tmp_path / "executed"
    executed.mkdir()
    for name in ("a", "b"):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}")]),
                       executed / f"{name}.ipynb")
    index = build.build_html(executed, out_dir=tmp_path, root=repo)
    page = (index.parent / "book" / "p.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"?]*mathjax[^"?]*)', page)
    assert scripts and not any("://" in src for src in scripts), scripts
    assert all((index.parent / "book" / src).resolve().is_file() for src in scripts)
    assert (index.parent / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
