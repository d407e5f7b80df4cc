"""Early-stopping distillation (Cho & Hariharan 2019): distil from the teacher as it was at an early epoch.

:func:`train_with_snapshots` trains the teacher once and keeps its weights after every epoch
(:class:`TeacherSnapshots`), so any epoch can teach without training the teacher again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdcourse import checkpoints
from kdcourse.train import FitResult, data_fingerprint, fit

__all__ = ["TeacherSnapshots", "train_with_snapshots"]


class _SnapshotBatches:
    """Wraps training batches; after the last batch of each epoch saves the model's state dict.

    ``fit`` consumes the batches of an epoch with a plain ``for`` loop, so the code after the final
    ``yield`` runs right after the last optimiser step of the epoch, before validation and before
    ``fit`` may restore its best weights: the file holds exactly the weights after that epoch.
    """

    def __init__(self, batches: Iterable, model: nn.Module, folder: Path) -> None:
        self.batches = batches
        self.model = model
        self.folder = folder
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def fingerprint(self) -> str:
        return data_fingerprint(self.batches)

    def __iter__(self) -> Iterator:
        yield from self.batches
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        checkpoints.save(state, self.folder / f"epoch_{self.epoch + 1:03d}.pt")


@dataclass
class TeacherSnapshots:
    """A teacher's training run with its weights after every epoch.

    ``paths[e - 1]`` is the state dict after epoch ``e`` (file ``epoch_{e:03d}.pt``); ``result`` is the
    run's :class:`~kdcourse.train.FitResult` (its ``history`` gives each epoch's validation accuracy).
    """

    paths: list[Path]
    result: FitResult

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, model: nn.Module, epoch: int) -> nn.Module:
        """Load the weights after ``epoch`` (1-based) into ``model`` and return it."""
        if not 1 <= epoch <= len(self.paths):
            raise ValueError(f"epoch must lie in [1, {len(self.paths)}], got {epoch}")
        model.load_state_dict(checkpoints.load(self.paths[epoch - 1], weights_only=True))
        return model


def train_with_snapshots(
    model: nn.Module,
    batches: Iterable,
    *,
    epochs: int,
    snapshot_dir: str | os.PathLike[str],
    **fit_kwargs: Any,
) -> TeacherSnapshots:
    """Train ``model`` with one :func:`kdcourse.train.fit` run, saving its weights after every epoch.

    The snapshots are the weights at the end of each epoch (not the best-so-far weights, whatever
    ``restore_best``); they are saved to ``snapshot_dir/epoch_{e:03d}.pt``. Only ``schedule="constant"``
    is accepted: with a learning rate that does not depend on the run's length, the snapshot after epoch
    ``e`` is bit for bit the teacher that a run of only ``e`` epochs would give, so "the teacher stopped
    early at epoch e" means one thing. (With a cosine or one-cycle schedule, epoch ``e`` of a long run is
    taken at a high learning rate and differs from a short run that anneals to the end.)

    With ``checkpoint=...`` in ``fit_kwargs`` an interrupted run resumes and keeps adding snapshots; a
    finished one is returned with the snapshots already in ``snapshot_dir``.
    """
    schedule = fit_kwargs.get("schedule", "constant")
    if schedule != "constant":
        raise ValueError(
            f"train_with_snapshots needs schedule='constant', got {schedule!r}: the weights after epoch e must not "
            "depend on the total number of epochs"
        )
    folder = Path(snapshot_dir)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped = _SnapshotBatches(batches, model, folder)
    result = fit(model, wrapped, epochs=epochs, **fit_kwargs)
    trained = len(result.history)
    paths = [folder / f"epoch_{e:03d}.pt" for e in range(1, trained + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"snapshots {missing} are missing from {folder} (the checkpoint resumed a run whose snapshots were deleted)")
    return TeacherSnapshots(paths, result)
