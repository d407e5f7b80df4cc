"""Provenance of a run: the code's commit, the device, the date, and the training of every network.

:func:`kdcourse.train.fit` notes the training sessions of each network it returns
(:func:`note_training`); a result file (:mod:`kdcourse.course.results`) records them together with
the provenance of the run that wrote it. Code with uncommitted changes is named by its commit and the
hash of the diff (``abc1234-dirty+0123abcd``), so every recorded result names code that a commit holds.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from kdcourse import hardware

__all__ = ["provenance", "record_start", "code_commit", "device_description", "note_training", "training_provenance", "utc_now"]

# the whole checkout except the result files, which change while a full build runs
_CODE = (":(top)", ":(top,exclude)book/results")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent
    ).stdout


def _git_commit() -> str:
    """``"abc1234"``; ``"abc1234-dirty+<first 8 hex of the diff's SHA-256>"`` with uncommitted changes
    to tracked files (result files excepted); ``"unknown"`` outside a git checkout."""
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
        diff = _git("diff", "HEAD", "--", *_CODE)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not diff:
        return commit
    return f"{commit}-dirty+{hashlib.sha256(diff.encode()).hexdigest()[:8]}"


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
        "date": utc_now(),
        "profile": profile,
        "seeds": list(seeds),
        "wall_seconds": round(float(wall_seconds), 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def code_commit() -> str:
    """The commit of the code that runs in this process (see :func:`record_start`)."""
    return _commit_at_start()


def record_start() -> None:
    """Note the commit now and forget the training noted so far: call it at the start of a chapter's run,
    so that its results name the code that ran and the training of the networks it used."""
    _commit_at_start()
    _training.clear()


# training sessions of the networks returned by ``fit`` since ``record_start``, by checkpoint
_training: dict[str, list[dict[str, Any]]] = {}


def note_training(key: str, sessions: list[dict[str, Any]]) -> None:
    """Remember the training ``sessions`` (see :class:`kdcourse.train.FitResult`) of one network.

    ``key`` identifies the network (its checkpoint path); noting it again replaces the entry."""
    _training[key] = [dict(s) for s in sessions]


def training_provenance() -> dict[str, Any]:
    """Where and when the networks used since :func:`record_start` were trained.

    ``networks``: how many; ``without_record``: how many came from checkpoints older than this
    record; ``commits`` and ``devices``: sorted distinct values; ``first``/``last``: UTC dates of the
    first and last training epoch; ``train_seconds``: total wall time of their training epochs."""
    sessions = [s for entry in _training.values() for s in entry]
    return {
        "networks": len(_training),
        "without_record": sum(1 for entry in _training.values() if not entry),
        "commits": sorted({s["commit"] for s in sessions}),
        "devices": sorted({s["device"] for s in sessions}),
        "first": min((s["started"] for s in sessions), default=None),
        "last": max((s["ended"] for s in sessions), default=None),
        "train_seconds": round(sum(s["seconds"] for s in sessions), 1),
    }


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
