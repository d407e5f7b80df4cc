"""Build the HTML book from the executed chapters.

:func:`build_html` stages a copy of the book with the executed notebooks (see
:func:`kdcourse.course.book.execute_chapters`) in place of the sources, a notice under the title of
every chapter executed in the smoke profile (:func:`add_smoke_notice`) and MathJax beside them
(:func:`stage_mathjax`), and builds it with Jupyter Book, execution off, into ``_build/html``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kdcourse.course.book import BOOK_DIR, PROFILE_METADATA, notebook_chapters, repo_root

__all__ = ["SMOKE_NOTICE", "add_smoke_notice", "stage_mathjax", "build_html"]

SMOKE_NOTICE = (
    "**This page was built in the smoke profile.** The chapter's code ran on a few hundred images for one "
    "or two epochs, only to prove that it runs; outputs labelled *Smoke run* are not results. Every "
    "conclusion, table and figure that states a finding comes from the recorded full-profile results "
    "({doc}`appendix_results`). To reproduce them, set `PROFILE = \"full\"` in the chapter's first code cell."
)


def add_smoke_notice(nb: object) -> bool:
    """Insert :data:`SMOKE_NOTICE` as a warning right under the title of a notebook executed in smoke.

    ``nb`` is an ``nbformat`` notebook, changed in place; returns whether the notice was added. A page
    whose content does not depend on the profile (the introduction, the appendix of recorded results)
    says so in its front matter, ``kdcourse: {same_in_every_profile: true}``, and gets no notice."""
    meta = nb.metadata.get(PROFILE_METADATA, {})
    if meta.get("profile") != "smoke" or meta.get("same_in_every_profile"):
        return False
    notice = f"```{{warning}}\n{SMOKE_NOTICE}\n```"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            title = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1)
            lines[title + 1 : title + 1] = ["", notice, ""]
            cell.source = "\n".join(lines)
            return True
    return False


def _stage_ignore(book_dir: Path) -> Callable[[str, list[str]], set[str]]:
    """A ``copytree`` filter that leaves out build folders, checkpoints and smoke results."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {name for name in names if name in {"_build", ".ipynb_checkpoints", "__pycache__"}}
        if Path(folder) == book_dir / "results":
            skipped |= {"smoke"} & set(names)
        return skipped

    return ignore


def _retarget_links(folder: Path, stems: list[str]) -> None:
    """In the staged pages, point Markdown links ``(X.md)``/``(X.md#a)`` to notebook chapters at ``X.ipynb``."""
    if not stems:
        return
    link = re.compile(r"\]\((?P<target>(?:\./)?(?:%s))\.md(?=[#)])" % "|".join(map(re.escape, stems)))
    for path in [*folder.rglob("*.md"), *folder.rglob("*.ipynb")]:
        text = path.read_text(encoding="utf-8")
        if link.search(text):
            path.write_text(link.sub(r"](\g<target>.ipynb", text), encoding="utf-8")


# MathJax is served from the built site itself (formulas render offline, and a downloaded copy of the
# site works as it is): _config.yml points Sphinx at MATHJAX_STATIC/MATHJAX_COMPONENT, staged from the
# copy of MathJax 3 that the django-static-mathjax package installs (a Python package named mathjax)
MATHJAX_STATIC = "_mathjax"
MATHJAX_COMPONENT = "mathjax/tex-mml-chtml.js"
# what of MathJax's es5 tree a page never loads: the other combined components, SVG output, Node.js,
# and latest.js (which would fetch the newest MathJax from a CDN)
_MATHJAX_UNUSED = ("mml-chtml.js", "mml-svg.js", "tex-chtml.js", "tex-chtml-full.js", "tex-chtml-full-speech.js",
                   "tex-mml-svg.js", "tex-svg.js", "tex-svg-full.js", "node-main.js", "svg", "svg.js", "liteDOM.js",
                   "latest.js")


def stage_mathjax(stage: Path) -> Path:
    """Copy MathJax 3 (its ``tex-mml-chtml`` component with the extensions, fonts and accessibility
    files it loads on demand, about 8 MB) into ``stage/_mathjax/mathjax`` and return the
    component's path there."""
    spec = importlib.util.find_spec("mathjax")
    source = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if source is None or not (source / "tex-mml-chtml.js").is_file():
        raise RuntimeError("MathJax 3 is not installed; install the package's dependencies: pip install -e .")
    target = stage / MATHJAX_STATIC / "mathjax"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*_MATHJAX_UNUSED))
    return stage / MATHJAX_STATIC / MATHJAX_COMPONENT


def build_html(
    executed_dir: Path | None = None,
    out_dir: Path | None = None,
    root: Path | None = None,
    strict: bool = False,
) -> Path:
    """Build the HTML book from executed notebooks (no execution) and return its ``index.html``.

    A copy of the book is staged in ``_build/stage`` with each notebook chapter ``book/X.md``
    replaced by ``executed_dir/X.ipynb`` (default ``_build/executed``), a notice under the title of
    every chapter executed in the smoke profile, links to ``X.md`` pointed at ``X.ipynb`` and MathJax
    (:func:`stage_mathjax`, so that the site's formulas need no network); Jupyter Book writes the
    site to ``out_dir/_build/html`` (default ``out_dir`` is the repository root, so ``_build/html``).
    ``strict`` rebuilds every page and turns Sphinx warnings (nit-picky) into errors.
    """
    root = Path(root) if root is not None else repo_root()
    executed_dir = Path(executed_dir) if executed_dir is not None else root / "_build" / "executed"
    out_dir = Path(out_dir) if out_dir is not None else root
    chapters = notebook_chapters(root)
    missing = [c.stem for c in chapters if not (executed_dir / f"{c.stem}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"no executed notebook for {', '.join(missing)} in {executed_dir}; "
            f"create them with: kdcourse execute {' '.join(missing)}"
        )

    stage = root / "_build" / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, stage / name)
    shutil.copytree(root / BOOK_DIR, stage / BOOK_DIR, ignore=_stage_ignore(root / BOOK_DIR))
    import nbformat

    for chapter in chapters:
        staged = stage / chapter.relative_to(root)
        staged.unlink()
        nb = nbformat.read(executed_dir / f"{chapter.stem}.ipynb", as_version=4)
        add_smoke_notice(nb)
        nbformat.write(nb, staged.with_suffix(".ipynb"))
    _retarget_links(stage / BOOK_DIR, [chapter.stem for chapter in chapters])
    stage_mathjax(stage)

    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
               "build", str(stage), "--path-output", str(out_dir)]
    if strict:
        command += ["-W", "-n", "--keep-going", "--all"]
    if subprocess.run(command).returncode != 0:
        raise RuntimeError(f"jupyter-book build of {stage} failed; see the messages above")
    return out_dir / "_build" / "html" / "index.html"
