"""Open the chapters in JupyterLab as notebooks (``kdcourse lab``).

The repository's Jupyter settings live in its ``.jupyter`` folder: ``labconfig/
default_setting_overrides.json`` makes Jupytext's notebook view the default viewer of Markdown files,
so a double-click on a chapter opens it as a notebook. Jupyter reads that folder when it is on
``$JUPYTER_CONFIG_PATH``, which :func:`lab_environment` arranges.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kdcourse.course.book import BOOK_DIR, repo_root, shared_folders

__all__ = ["CONFIG_DIR", "lab_environment", "run_lab"]

CONFIG_DIR = ".jupyter"  # the repository's Jupyter configuration folder


def lab_environment(root: Path) -> dict[str, str]:
    """Environment variables for a Jupyter server of the repository at ``root``: its ``.jupyter``
    folder first on ``$JUPYTER_CONFIG_PATH``, and the data and weights folders of
    :func:`kdcourse.course.book.shared_folders` for the chapters' kernels."""
    paths = [str(root / CONFIG_DIR), os.environ.get("JUPYTER_CONFIG_PATH")]
    return {"JUPYTER_CONFIG_PATH": os.pathsep.join(filter(None, paths)), **shared_folders(root)}


def run_lab(args: Sequence[str] = (), root: Path | None = None) -> int:
    """Start JupyterLab on the chapters' folder with the repository's settings; ``args`` go to
    ``jupyter lab``. Returns its exit status."""
    root = Path(root) if root is not None else repo_root()
    command = [sys.executable, "-m", "jupyter", "lab", str(root / BOOK_DIR), *args]
    return subprocess.run(command, cwd=root, env={**os.environ, **lab_environment(root)}).returncode
