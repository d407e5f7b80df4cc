"""Small machine-readable result files with their provenance.

A chapter writes its headline numbers with :func:`save_results`; the appendix reads them back
with :func:`load_results`. A file records two provenances (:mod:`kdcourse.provenance`): that of the
run that wrote it (the *render*, which may only have resumed finished checkpoints) and that of the
*training* that produced the checkpoints, which :func:`kdcourse.train.fit` notes for every network
it returns. The test suite refuses a dirty commit in the committed full-profile files, so every
recorded result names code that a commit holds.

Files live in ``results/<profile>/<name>.json`` under the folder given by ``KDCOURSE_RESULTS`` or,
by default, the current working directory (chapters run from ``book/``, so full-profile results
land in ``book/results/full/``, which is committed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from kdcourse.provenance import provenance, training_provenance

__all__ = ["RESULTS_ENV", "results_dir", "save_results", "load_results", "list_results"]

RESULTS_ENV = "KDCOURSE_RESULTS"


def results_dir(profile: str) -> Path:
    """Folder of the result files of ``profile``: ``$KDCOURSE_RESULTS/<profile>`` or ``./results/<profile>``."""
    base = Path(os.environ.get(RESULTS_ENV) or Path.cwd() / "results")
    return base / profile


def save_results(
    name: str, results: dict[str, Any], *, profile: str, seeds: list[int], wall_seconds: float,
    folder: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``{"provenance": ..., "training": ..., "results": results}`` to ``results_dir(profile)/<name>.json``.

    ``provenance`` is that of this run (``wall_seconds`` of it), ``training`` is
    :func:`training_provenance`. A commit ending in ``-dirty+<hash>`` says that the code had
    uncommitted changes; the tests refuse such a commit in the recorded full-profile files.
    ``folder`` replaces ``results_dir(profile)``."""
    payload = {
        "provenance": provenance(profile=profile, seeds=seeds, wall_seconds=wall_seconds),
        "training": training_provenance(),
        "results": results,
    }
    folder = Path(folder) if folder is not None else results_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
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
