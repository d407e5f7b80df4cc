"""Notebooks for the launch buttons: every chapter as an ``.ipynb`` that runs in Colab or on Binder.

The Colab and Binder buttons of the HTML book open ``book/<chapter>.ipynb`` on the branch that
``_config.yml`` names in ``repository.branch`` (:data:`NOTEBOOKS_BRANCH`; only the launch buttons
read it). :func:`export_notebooks` writes that branch's tree: each notebook chapter (the executed
notebook where one exists, so a reader sees the outputs before running anything), with a first
cell that fetches and installs the course package at the commit the notebooks were built from
when it is missing, and a ``requirements.txt`` from which Binder builds its environment. The
publish workflow pushes the tree to the branch; :func:`launch_targets` reads the buttons of a
built site back, so a test can check that every button opens a notebook of the export.
"""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

from kdcourse.course.book import BOOK_DIR, convert_chapter, notebook_chapters, repo_root

__all__ = ["NOTEBOOKS_BRANCH", "INSTALL_TAG", "install_cell_source", "export_notebooks", "launch_targets"]

NOTEBOOKS_BRANCH = "notebooks"
INSTALL_TAG = "kdcourse-install"  # the tag of the first cell added by the export
# Binder builds its image from this file on the notebooks branch: the CPU wheels of PyTorch, in the
# range of pyproject.toml, so the install cell finds torch already there (a few hundred MB, not GBs)
BINDER_REQUIREMENTS = """\
--extra-index-url https://download.pytorch.org/whl/cpu
torch>=2.5,<2.16
torchvision>=0.20,<0.31
"""


def install_cell_source(repository: str, ref: str) -> str:
    """The code of the first cell of an exported chapter: where ``kdcourse`` is not importable
    (Colab, Binder), clone ``repository`` at ``ref``, install it (editable, so that its recorded
    results are found beside the package) and point ``$KDCOURSE_RESULTS`` at them; elsewhere nothing."""
    return f"""\
# Colab, Binder, or a Jupyter without the course package: fetch the course at the commit these
# notebooks were built from and install it. Where kdcourse is installed, this cell does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("kdcourse") is None:
    if not os.path.isdir("kdcourse-src"):
        subprocess.run(["git", "clone", "--quiet", {repository!r}, "kdcourse-src"], check=True)
    subprocess.run(["git", "-C", "kdcourse-src", "checkout", "--quiet", {ref!r}], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "kdcourse-src"], check=True)
    sys.path.insert(0, os.path.abspath("kdcourse-src"))
    os.environ["KDCOURSE_RESULTS"] = os.path.abspath("kdcourse-src/{BOOK_DIR}/results")"""


def _repository_url(root: Path) -> str:
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"]


def _head(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"cannot read the commit of {root} (is it a git clone?); pass ref=... explicitly") from exc


def export_notebooks(
    out_dir: Path,
    executed_dir: Path | None = None,
    root: Path | None = None,
    repository: str | None = None,
    ref: str | None = None,
) -> list[Path]:
    """Write the launch-button tree into ``out_dir`` and return the notebooks written.

    ``out_dir/book/<chapter>.ipynb`` for every notebook chapter of ``_toc.yml``, taken from
    ``executed_dir`` (default ``_build/executed``) where it holds the chapter, else converted from
    its source unexecuted; each gets :func:`install_cell_source` (``repository``, default the
    ``repository.url`` of ``_config.yml``; ``ref``, default the commit checked out) as its first cell.
    Also writes ``requirements.txt`` for Binder and a ``README.md`` saying what the tree is.
    """
    import nbformat

    root = Path(root) if root is not None else repo_root()
    executed_dir = Path(executed_dir) if executed_dir is not None else root / "_build" / "executed"
    out_dir = Path(out_dir)
    repository = repository or _repository_url(root)
    ref = ref or _head(root)
    book_dir = out_dir / BOOK_DIR
    book_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in notebook_chapters(root):
        executed = executed_dir / f"{chapter.stem}.ipynb"
        source = executed if executed.is_file() else convert_chapter(chapter, book_dir)
        nb = nbformat.read(source, as_version=4)
        nb.cells = [cell for cell in nb.cells if INSTALL_TAG not in cell.get("metadata", {}).get("tags", [])]
        install = nbformat.v4.new_code_cell(install_cell_source(repository, ref), metadata={"tags": [INSTALL_TAG]})
        nb.cells.insert(0, install)
        path = book_dir / f"{chapter.stem}.ipynb"
        nbformat.write(nb, path)
        written.append(path)
    (out_dir / "requirements.txt").write_text(BINDER_REQUIREMENTS)
    (out_dir / "README.md").write_text(
        f"# Notebooks of the kdcourse book\n\nGenerated from {repository} at commit `{ref}` by "
        "`kdcourse export-notebooks`, for the book's Colab and Binder buttons. Do not edit: the chapters' "
        "sources are the `book/*.md` files of the main branch.\n"
    )
    return written


_COLAB = re.compile(r"^/github/[^/]+/[^/]+/blob/[^/]+/(?P<path>.+)$")


def launch_targets(html_dir: Path) -> dict[str, set[str]]:
    """The notebook each Colab or Binder button of a built site opens, by button URL → repository paths.

    Returns ``{url: {path, ...}}`` for every launch link in ``html_dir/**/*.html`` (a Colab URL names
    its path after ``blob/<branch>/``, a Binder URL in ``urlpath=tree/<path>``), with the branch as
    ``branch:<name>`` in the set so that a caller can check it too.
    """
    targets: dict[str, set[str]] = {}
    for page in Path(html_dir).rglob("*.html"):
        for url in re.findall(r'href="(https://(?:colab\.research\.google\.com|mybinder\.org)/[^"]+)"', page.read_text(encoding="utf-8")):
            url = html.unescape(url)
            parsed = urlparse(url)
            if parsed.netloc == "colab.research.google.com":
                match = _COLAB.match(parsed.path)
                branch = parsed.path.split("/")[5] if match else None
                paths = {match.group("path")} if match else set()
            else:
                branch = parsed.path.rstrip("/").split("/")[-1]
                urlpath = parse_qs(parsed.query).get("urlpath", [""])[0]
                paths = {urlpath.split("/", 1)[1]} if "/" in urlpath else set()
            targets[url] = {*paths, f"branch:{branch}"}
    return targets
