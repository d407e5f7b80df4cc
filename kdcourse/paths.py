"""Where data, weights and results live.

Every loader takes an explicit ``root``; without one it uses the ``KDCOURSE_DATA`` environment
variable, and without that a per-user cache folder (``$XDG_CACHE_HOME/kdcourse/data``, by default
``~/.cache/kdcourse/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "RUNS_ENV", "data_root", "cache_dir", "runs_dir"]

DATA_ENV = "KDCOURSE_DATA"
RUNS_ENV = "KDCOURSE_RUNS"


def cache_dir() -> Path:
    """The per-user cache folder of the course, ``$XDG_CACHE_HOME/kdcourse`` (``~/.cache/kdcourse``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kdcourse"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data folder: ``root`` if given, else ``$KDCOURSE_DATA``, else ``cache_dir()/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def runs_dir() -> Path:
    """Folder for checkpoints and cached teacher logits: ``$KDCOURSE_RUNS``, else ``cache_dir()/runs``."""
    env = os.environ.get(RUNS_ENV)
    return Path(env).expanduser() if env else cache_dir() / "runs"
