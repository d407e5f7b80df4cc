"""The course's MNIST teacher, shared by the MNIST chapters (a support module, not a chapter study).

One CNN teacher per seed (:func:`kdcourse.models.mnist_teacher`), trained with Adam and a cosine
schedule on randomly shifted training images, keeping the epoch of best validation accuracy. Its
checkpoint and its logits on the training split are stored under a folder named by the recipe
(:meth:`TeacherConfig.key`), so every chapter that asks for the same teacher reads the same files
instead of training it again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from kdcourse import data as kd_data
from kdcourse import hardware, models, paths
from kdcourse.kd import teachers
from kdcourse.studies.common import config_key, study_dataset, with_overrides
from kdcourse.train import FitResult, fit

__all__ = ["TeacherConfig", "PROFILES", "config_for", "TrainedTeacher", "train_teacher"]


@dataclass(frozen=True)
class TeacherConfig:
    """What the teacher needs: its recipe (epochs, batch size, learning rate, random shift in pixels),
    the split it trains on (the first ``train_samples`` training images, None: all; ``val_size``
    validation images), bfloat16 autocast or not, and ``run_root``, the folder under which its
    checkpoints go (None: :func:`kdcourse.paths.runs_dir`)."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    shift: int = 2  # random translation of the training images, in pixels; 0 disables it
    train_samples: int | None = None
    val_size: int = 5000
    mixed_precision: bool = True
    run_root: Path | None = None

    def key(self) -> str:
        """Short hash of the recipe and split (``run_root`` left out): the name of the teacher's folder."""
        return config_key(dataclasses.replace(self, run_root=None))

    @property
    def run_dir(self) -> Path:
        """Folder of the checkpoints and cached logits: ``run_root / "mnist_teacher" / key()``."""
        return (self.run_root or paths.runs_dir()) / "mnist_teacher" / self.key()


PROFILES: dict[str, TeacherConfig] = {
    "smoke": TeacherConfig(epochs=1, batch_size=64, train_samples=512),
    "full": TeacherConfig(),
}


def config_for(profile: str, **overrides: object) -> TeacherConfig:
    """The teacher of ``profile`` (``smoke`` or ``full``) with ``overrides``; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


class TrainedTeacher(NamedTuple):
    """A trained teacher (on ``device``), its fit, and its logits ``(N, 10)`` on the training split."""

    model: nn.Module
    fit: FitResult
    logits: Tensor


def train_teacher(config: TeacherConfig, dataset: kd_data.ImageData, seed: int,
                  device: str | torch.device | None = None) -> TrainedTeacher:
    """The teacher of ``seed``, trained on ``dataset`` cut by :func:`kdcourse.studies.common.study_dataset`
    (or read from its checkpoint), and its logits on that training split (cached beside it).

    ``device`` defaults to the GPU when there is one, else the CPU."""
    dataset = study_dataset(config, dataset)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    torch.manual_seed(seed)
    teacher = models.mnist_teacher().to(memory_format=hardware.CONV_MEMORY_FORMAT)
    augment = None
    if config.shift > 0:
        def augment(x: Tensor, generator: torch.Generator) -> Tensor:
            return kd_data.random_shift(x, generator, config.shift)
    batches = kd_data.TensorBatches(dataset.train.x, dataset.train.y, batch_size=config.batch_size, seed=seed,
                                    transform=augment)
    result = fit(
        teacher, batches, epochs=config.epochs, val_data=(dataset.val.x, dataset.val.y), lr=config.lr,
        schedule="cosine", checkpoint=config.run_dir / f"teacher_seed{seed}.ckpt", seed=seed, amp_dtype=amp,
        device=device, description=f"teacher seed {seed}",
    )
    logits = teachers.teacher_logits(teacher, dataset.train.x, cache=config.run_dir / f"teacher_logits_seed{seed}.pt",
                                     amp_dtype=amp, device=device)
    return TrainedTeacher(teacher, result, logits)
