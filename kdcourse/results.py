"""Small machine-readable result files with their provenance.

A chapter writes its headline numbers with :func:`save_results`; the appendix reads them back
with :func:`load_results`. Files live in ``results/<profile>/<name>.json`` under the folder given
by ``KDCOURSE_RESULTS`` or, by default, the current working directory (chapters run from ``book/``,
so full-profile results land in ``book/results/full/``, which is committed).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from kdcourse import hardware

__all__ = ["RESULTS_ENV", "results_dir", "provenance", "save_results", "load_results", "list_results", "record_start"]

RESULTS_ENV = "KDCOURSE_RESULTS"


def results_dir(profile: str) -> Path:
    """Folder of the result files of ``profile``: ``$KDCOURSE_RESULTS/<profile>`` or ``./results/<profile>``."""
    base = Path(os.environ.get(RESULTS_ENV) or Path.cwd() / "results")
    return base / profile


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_description() -> str:
    """The accelerator, or the CPU model and core count when there is none."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = hardware.cpu_model() or platform.processor() or platform.machine()
    return f"CPU: {cpu}, {torch.get_num_threads()} threads"


@functools.cache
def _commit_at_start() -> str:
    """The commit when results were first asked for in this process: the code that ran, even if the
    working tree changes while a long run is going on."""
    return _git_commit()


def provenance(*, profile: str, seeds: list[int], wall_seconds: float) -> dict[str, Any]:
    """Commit, device, date (UTC), seeds, wall time (s), and library versions of a run."""
    return {
        "commit": _commit_at_start(),
        "device": device_description(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "seeds": list(seeds),
        "wall_seconds": round(float(wall_seconds), 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def record_start() -> None:
    """Note the commit now; call it at the start of a run so that its results name the code that ran."""
    _commit_at_start()


def save_results(name: str, results: dict[str, Any], *, profile: str, seeds: list[int], wall_seconds: float) -> Path:
    """Write ``{"provenance": ..., "results": results}`` to ``results_dir(profile)/<name>.json``."""
    folder = results_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"provenance": provenance(profile=profile, seeds=seeds, wall_seconds=wall_seconds), "results": results}
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return path


def load_results(name: str, profile: str = "full", folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read a result file written by :func:`save_results`; ``FileNotFoundError`` says which file is missing."""
    path = (Path(folder) if folder is not None else results_dir(profile)) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no recorded {profile}-profile results at {path}; run the chapter with that profile to create them"
        )
    return json.loads(path.read_text())


def list_results(profile: str = "full", folder: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the result files available for ``profile``, sorted."""
    base = Path(folder) if folder is not None else results_dir(profile)
    return sorted(p.stem for p in base.glob("*.json"))
