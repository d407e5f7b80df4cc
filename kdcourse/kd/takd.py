"""Teacher-assistant distillation (Mirzadeh et al. 2020): a chain teacher → assistant(s) → student.

An assistant of intermediate size bridges a large capacity gap; each link of the chain is distilled
from the one before (:func:`distill_chain`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from kdcourse.data import TensorBatches
from kdcourse.kd.teachers import teacher_logits
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.train import FitResult, fit

__all__ = ["distill_chain"]


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
            link's teacher logits ``(N, C)`` are computed once (:func:`kdcourse.kd.teachers.teacher_logits`).
        val: ``(x_val, y_val)`` for model selection of every link (see :func:`kdcourse.train.fit`).
        temperature, alpha: T and α of :func:`kdcourse.kd.hinton.distillation_loss`, shared by all links.
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

    results = []
    for index in range(1, len(models)):
        cache = folder / f"link{index}_teacher_logits.pt" if folder is not None else None
        soft = teacher_logits(models[index - 1], x, cache=cache, amp_dtype=amp_dtype, device=device)
        batches = TensorBatches(x, y, soft, batch_size=batch_size, seed=seed)
        results.append(
            fit(
                models[index],
                batches,
                HintonKD(temperature, alpha),
                epochs=epochs,
                val_data=val,
                lr=lr,
                seed=seed,
                checkpoint=folder / f"link{index}.pt" if folder is not None else None,
                **{"description": f"link {index}", **fit_kwargs},
            )
        )
    return results
