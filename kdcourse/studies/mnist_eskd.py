"""Early-stopping knowledge distillation on MNIST (Cho & Hariharan 2019).

Two findings of the paper are tested. (1) A teacher stopped early can be a better teacher than the
same teacher fully trained: one teacher run per seed keeps its weights after every epoch, and a
fresh student is distilled from each of them. (2) A larger, more accurate teacher does not always
make a better student: students are distilled from fully trained teachers of three sizes.

Teachers train with a constant learning rate so that the snapshot after epoch e is exactly the
teacher that an e-epoch run would give (see :func:`kdcourse.kd.eskd.train_with_snapshots`). Every
student of a seed starts from the same weights and sees the same batches: differences are paired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kdcourse import data as kd_data
from kdcourse import hardware, models, paths
from kdcourse.kd import teachers
from kdcourse.kd.eskd import train_with_snapshots
from kdcourse.stats import paired_effect
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.metrics import classification_scores
from kdcourse.train import fit, predict_logits
from kdcourse.studies.common import config_key, study_dataset, with_overrides

__all__ = ["EskdConfig", "PROFILES", "TEACHERS", "config_for", "run_study", "paired_against", "chosen_epoch"]

# teacher sizes for finding (2): name → constructor; "cnn" is the course's MNIST teacher
TEACHERS: dict[str, Callable[[], nn.Module]] = {
    "cnn": models.mnist_teacher,
    "small cnn": models.mnist_assistant,
    "mlp 784-64-10": lambda: models.mlp([64]),
}


@dataclass(frozen=True)
class EskdConfig:
    """Settings shared by every arm."""

    seeds: tuple[int, ...] = (0, 1, 2)
    teacher_epochs: int = 8
    teacher_batch_size: int = 128
    teacher_lr: float = 1e-3
    student_epochs: int = 10
    student_batch_size: int = 256
    student_lr: float = 3e-3
    temperature: float = 4.0
    alpha: float = 0.5
    teacher_sizes: tuple[str, ...] = ("cnn", "small cnn", "mlp 784-64-10")
    train_samples: int | None = None
    val_size: int = 5000
    mixed_precision: bool = True

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder."""
        return config_key(self)


PROFILES: dict[str, EskdConfig] = {
    "smoke": EskdConfig(seeds=(0, 1), teacher_epochs=2, student_epochs=1, teacher_batch_size=64, student_batch_size=64, train_samples=512),
    "full": EskdConfig(),
}


def config_for(profile: str, **overrides: object) -> EskdConfig:
    """The configuration of ``profile`` with ``overrides`` applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


def run_study(config: EskdConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> pd.DataFrame:
    """Train teachers (with snapshots) and students for every seed; one row per trained network.

    Columns: ``seed``, ``experiment`` (``"teacher epoch"`` or ``"teacher size"``), ``teacher``
    (size name), ``teacher_epoch``, ``teacher_test_accuracy``, ``teacher_val_accuracy``,
    ``student_test_accuracy``, ``student_val_accuracy`` (fractions), ``seconds`` (training time of the row's student).
    The scratch student has ``teacher`` = ``"none"``.
    """
    check_temperature(config.temperature)
    check_alpha(config.alpha)
    unknown = set(config.teacher_sizes) - set(TEACHERS)
    if unknown or "cnn" not in config.teacher_sizes:
        raise ValueError(f"teacher_sizes must include 'cnn' and name only {sorted(TEACHERS)}; got {config.teacher_sizes}")
    dataset = study_dataset(config, dataset)
    run_dir = (run_root or paths.runs_dir()) / "mnist_eskd" / config.key()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    rows: list[dict] = []

    def accuracy(model: nn.Module) -> float:
        return classification_scores(predict_logits(model, dataset.test.x, amp_dtype=amp, device=device), dataset.test.y)["accuracy"]

    def student(seed: int, soft_targets: torch.Tensor, alpha: float, name: str) -> tuple[float, float, float]:
        torch.manual_seed(seed)
        net = models.mnist_student()
        batches = kd_data.TensorBatches(dataset.train.x, dataset.train.y, soft_targets, batch_size=config.student_batch_size, seed=seed)
        result = fit(
            net, batches, HintonKD(config.temperature, alpha), epochs=config.student_epochs,
            val_data=(dataset.val.x, dataset.val.y), lr=config.student_lr, schedule="cosine", seed=seed, device=device,
            amp_dtype=amp, checkpoint=run_dir / f"seed{seed}_student_{name}.ckpt", description=f"student {name}",
        )
        return accuracy(net), result.best_val_score, result.train_seconds

    for seed in config.seeds:
        teacher_logits_final = None
        for size in config.teacher_sizes:
            torch.manual_seed(seed)
            teacher = TEACHERS[size]().to(memory_format=hardware.CONV_MEMORY_FORMAT)  # faster convolutions on a CPU; no-op for the MLP
            batches = kd_data.TensorBatches(dataset.train.x, dataset.train.y, batch_size=config.teacher_batch_size, seed=seed)
            tag = size.replace(" ", "_")
            snapshots = train_with_snapshots(
                teacher, batches, epochs=config.teacher_epochs, snapshot_dir=run_dir / f"seed{seed}_{tag}_snapshots",
                val_data=(dataset.val.x, dataset.val.y), lr=config.teacher_lr, schedule="constant", seed=seed,
                device=device, amp_dtype=amp, restore_best=False, checkpoint=run_dir / f"seed{seed}_{tag}.ckpt",
                description=f"teacher {size}",
            )
            epochs = range(1, len(snapshots) + 1) if size == "cnn" else [len(snapshots)]
            for epoch in epochs:
                snapshots.load(teacher, epoch)
                logits = teachers.teacher_logits(teacher, dataset.train.x, cache=run_dir / f"seed{seed}_{tag}_epoch{epoch}_logits.pt",
                                                amp_dtype=amp, device=device)
                test, val, seconds = student(seed, logits, config.alpha, f"{tag}_epoch{epoch}")
                rows.append({"seed": seed, "experiment": "teacher epoch" if size == "cnn" else "teacher size", "teacher": size,
                             "teacher_epoch": epoch, "teacher_test_accuracy": accuracy(teacher),
                             "teacher_val_accuracy": snapshots.result.history[epoch - 1]["val_accuracy"],
                             "student_test_accuracy": test, "student_val_accuracy": val, "seconds": seconds})
                if size == "cnn" and epoch == len(snapshots):
                    teacher_logits_final = logits
        test, val, seconds = student(seed, teacher_logits_final, 0.0, "scratch")
        rows.append({"seed": seed, "experiment": "baseline", "teacher": "none", "teacher_epoch": 0, "teacher_test_accuracy": float("nan"),
                     "teacher_val_accuracy": float("nan"), "student_test_accuracy": test, "student_val_accuracy": val, "seconds": seconds})
    return pd.DataFrame(rows)


def paired_against(runs: pd.DataFrame, reference: pd.Series) -> pd.DataFrame:
    """For each (teacher, teacher_epoch), the paired effect of the student's test accuracy over ``reference``
    (student test accuracy indexed by seed), by :func:`kdcourse.stats.paired_effect`.

    Columns: ``teacher``, ``teacher_epoch``, ``seeds`` (paired seeds), ``seed <s>`` (the difference on each
    seed, in points), then the fields of :meth:`kdcourse.stats.Effect.as_dict` (``mean``, ``std``,
    ``low``, ``high``, ..., ``p_value``, ``verdict``). With fewer than two paired seeds there is no
    effect: ``mean`` alone, the other fields missing."""
    out = []
    for (teacher, epoch), group in runs.groupby(["teacher", "teacher_epoch"], sort=False):
        a = group.set_index("seed").student_test_accuracy
        d = (a - reference).dropna() * 100
        row = {"teacher": teacher, "teacher_epoch": epoch, "seeds": len(d), **{f"seed {s}": v for s, v in d.items()}}
        if len(d) >= 2:
            row |= paired_effect(a, reference).as_dict()
        else:
            row |= {"mean": d.mean() if len(d) else float("nan"), "std": float("nan"), "verdict": None}
        out.append(row)
    return pd.DataFrame(out)


def chosen_epoch(runs: pd.DataFrame, on: str = "teacher_val_accuracy") -> int:
    """The CNN teacher epoch (of the ``"teacher epoch"`` rows) with the highest mean ``on`` over seeds.

    ``on`` is a validation column, ``"teacher_val_accuracy"`` (the snapshot a teacher run with early
    stopping on validation would keep) or ``"student_val_accuracy"`` (the snapshot whose students
    validate best); a test column is refused: an epoch chosen on the test set would make the test
    differences that follow biased. Ties go to the earlier epoch."""
    if on not in ("teacher_val_accuracy", "student_val_accuracy"):
        raise ValueError(f"choose a teacher epoch on a validation column (teacher_val_accuracy or student_val_accuracy), not {on!r}")
    epochs = runs[runs.experiment == "teacher epoch"]
    return int(epochs.groupby("teacher_epoch")[on].mean().idxmax())
