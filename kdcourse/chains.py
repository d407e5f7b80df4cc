"""Chains of teachers: teacher assistants and early-stopped teachers.

Teacher-assistant distillation (Mirzadeh et al. 2020) bridges a large capacity gap with a chain
teacher → assistant(s) → student, each link distilled from the one before (:func:`distill_chain`).
Early-stopping KD (Cho & Hariharan 2019) distils from the teacher as it was at an early epoch of its
training; :func:`train_with_snapshots` trains the teacher once and keeps its weights after every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from . import checkpoints
from .data import TensorBatches
from .distill import teacher_logits
from .losses import check_alpha, check_temperature, distillation_loss
from .train import FitResult, data_fingerprint, fit

__all__ = ["distill_chain", "TeacherSnapshots", "train_with_snapshots"]


def distill_chain(
    models: Sequence[nn.Module],
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    *,
    temperature: float,
    alpha: float,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    **fit_kwargs: Any,
) -> list[FitResult]:
    """Distil along ``models``: ``models[i]`` learns from the logits of the trained ``models[i - 1]``.

    Args:
        models: ``[teacher, assistant…, student]``; the teacher is already trained, every other model
            is trained in place, in order. Two models are plain knowledge distillation.
        train: ``(x, y)`` training inputs ``(N, ...)`` and labels ``(N,)``; not augmented, so each
            link's teacher logits ``(N, C)`` are computed once (:func:`kdcourse.distill.teacher_logits`).
        val: ``(x_val, y_val)`` for model selection of every link (see :func:`kdcourse.train.fit`).
        temperature, alpha: T and α of :func:`kdcourse.losses.distillation_loss`, shared by all links.
        epochs, batch_size, lr, seed: training settings of every link; the batches of each link are
            shuffled by ``seed`` (initialise the models under a seed before calling, for reproducibility).
        checkpoint_dir: if given, link ``i`` writes its checkpoint to ``link{i}.pt`` and caches its
            teacher's logits in ``link{i}_teacher_logits.pt`` there, so an interrupted chain resumes
            (the cache is checked against the teacher's weights and the inputs).
        fit_kwargs: further arguments of :func:`kdcourse.train.fit` (``device``, ``amp_dtype``, ``schedule``…);
            ``device`` and ``amp_dtype`` are also used for the teacher passes.

    Returns:
        The :class:`~kdcourse.train.FitResult` of each trained link, ``len(models) - 1`` of them.
    """
    if len(models) < 2:
        raise ValueError(f"a chain needs a trained teacher and at least one model to train, got {len(models)} model(s)")
    check_temperature(temperature)
    check_alpha(alpha)
    if "checkpoint" in fit_kwargs:
        raise ValueError("pass checkpoint_dir instead of checkpoint: every link needs its own checkpoint file")
    x, y = train
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    device = fit_kwargs.get("device", "cpu")
    amp_dtype = fit_kwargs.get("amp_dtype")

    def loss_fn(logits: Tensor, targets: Tensor, soft: Tensor) -> Tensor:
        return distillation_loss(logits, soft, targets, temperature, alpha)

    results = []
    for index in range(1, len(models)):
        cache = folder / f"link{index}_teacher_logits.pt" if folder is not None else None
        soft = teacher_logits(models[index - 1], x, cache=cache, amp_dtype=amp_dtype, device=device)
        batches = TensorBatches(x, y, soft, batch_size=batch_size, seed=seed)
        results.append(
            fit(
                models[index],
                batches,
                loss_fn,
                epochs=epochs,
                val_data=val,
                lr=lr,
                seed=seed,
                checkpoint=folder / f"link{index}.pt" if folder is not None else None,
                **{"description": f"link {index}", **fit_kwargs},
            )
        )
    return results


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
