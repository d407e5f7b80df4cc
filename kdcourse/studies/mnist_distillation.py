"""The MNIST distillation study: CNN teacher → MLP student, a T × α grid, and the student from scratch.

For every seed: train the teacher (checkpointed), cache its logits on the training split, then
train the whole grid of students plus the scratch student (α = 0), ``stack_size`` at a time side
by side in a :class:`~kdcourse.kd.stacked.StackedMLP`. All arms of a seed share the initial weights, the batch
order and the teacher, so differences between arms are paired. Each student keeps the epoch with
the best validation accuracy; the test set is only used to report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from kdcourse import data as kd_data
from kdcourse import hardware, metrics, models, paths, stats
from kdcourse.kd import stacked
from kdcourse.train import fit, predict_logits
from kdcourse.studies import mnist_teacher
from kdcourse.studies.common import config_key, study_dataset, with_overrides

__all__ = [
    "StudyConfig", "PROFILES", "StudyOutcome", "config_for", "run_dir_for", "teacher_config", "seed_models",
    "run_study",
    "grid_table", "arm_accuracy", "paired_comparison", "grid_effects",
]


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a run of the study (all arms share it)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    temperatures: tuple[float, ...] = (1, 2, 4, 16, 32, 64)
    alphas: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    teacher_epochs: int = 12
    teacher_batch_size: int = 128
    teacher_lr: float = 1e-3
    teacher_shift: int = 2  # random translation (pixels) of the teacher's training images; 0 disables
    student_epochs: int = 10
    student_batch_size: int = 256
    student_lr: float = 3e-3
    stack_size: int = 4  # students trained together in one StackedMLP (more stop fitting in CPU caches)
    train_samples: int | None = None  # None: the whole training split (55,000 images)
    val_size: int = 5000
    mixed_precision: bool = True  # bfloat16 autocast for matrix products
    headline: tuple[float, float] = (4.0, 0.5)  # (T, α) of the reports' KD student

    def key(self) -> str:
        """Short hash of the configuration: runs with another configuration never share checkpoints."""
        return config_key(self)


PROFILES: dict[str, StudyConfig] = {
    "smoke": StudyConfig(
        seeds=(0, 1), temperatures=(1, 4), alphas=(0.5, 0.9), teacher_epochs=1, student_epochs=2,
        teacher_batch_size=64, student_batch_size=64, train_samples=512, val_size=5000,
    ),
    "full": StudyConfig(),
}


def config_for(profile: str, **overrides: object) -> StudyConfig:
    """The configuration of ``profile`` with ``overrides`` (fields of :class:`StudyConfig`) applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


@dataclass
class StudyOutcome:
    """Results of :func:`run_study`.

    ``runs`` has one row per (seed, model): columns ``seed``, ``model`` (``teacher``, ``kd`` or
    ``scratch``), ``temperature``, ``alpha``, ``val_accuracy``, ``test_accuracy`` (fractions),
    ``best_epoch``, ``precision``, ``recall``, ``f1`` (macro, test set). ``models`` holds the
    trained networks of the first seed: ``teacher``, ``kd`` (the headline T, α) and ``scratch``.
    """

    config: StudyConfig
    runs: pd.DataFrame
    models: dict[str, nn.Module]
    train_seconds: float
    epoch_seconds: dict[str, float] = field(default_factory=dict)


def _scores_row(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    scores = metrics.classification_scores(logits, targets)
    return {"test_accuracy": scores["accuracy"], "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]}


def run_dir_for(config: StudyConfig, run_root: Path | None = None) -> Path:
    """Checkpoint folder of ``config``: ``run_root / config.key()`` (default root ``runs_dir() / "mnist_distillation"``)."""
    return (run_root or paths.runs_dir() / "mnist_distillation") / config.key()


def teacher_config(config: StudyConfig, run_root: Path | None = None) -> mnist_teacher.TeacherConfig:
    """The course teacher that ``config``'s ``teacher_*`` fields and splits describe, its checkpoints under
    ``run_root`` (None: :func:`kdcourse.paths.runs_dir`)."""
    return mnist_teacher.TeacherConfig(
        epochs=config.teacher_epochs, batch_size=config.teacher_batch_size, lr=config.teacher_lr,
        shift=config.teacher_shift, train_samples=config.train_samples, val_size=config.val_size,
        mixed_precision=config.mixed_precision, run_root=run_root,
    )


def _grid_members(config: StudyConfig) -> list[tuple[str, float, float]]:
    """(model, T, α) of every stacked student: the T × α grid, then the scratch student (α = 0)."""
    return [("kd", t, a) for t in config.temperatures for a in config.alphas] + [("scratch", 1.0, 0.0)]


def _train_students(
    config: StudyConfig, dataset: kd_data.ImageData, seed: int, soft_targets: torch.Tensor, run_dir: Path,
    amp: torch.dtype | None, device: torch.device,
) -> tuple[list[dict], dict[str, nn.Module], float]:
    """Train every (T, α) student and the scratch student of one seed, ``stack_size`` at a time."""
    members = _grid_members(config)
    rows, kept, seconds = [], {}, 0.0
    batches = kd_data.TensorBatches(dataset.train.x, dataset.train.y, soft_targets, batch_size=config.student_batch_size, seed=seed)
    for first in range(0, len(members), config.stack_size):
        chunk = members[first : first + config.stack_size]
        temperatures = torch.tensor([t for _, t, _ in chunk])
        alphas = torch.tensor([a for _, _, a in chunk])
        students = []
        for _ in chunk:  # identical initial weights for every arm of this seed
            torch.manual_seed(seed)
            students.append(models.mnist_student())
        stack = stacked.StackedMLP(students)

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor, teacher_batch: torch.Tensor) -> torch.Tensor:
            return stacked.grid_distillation_loss(logits, teacher_batch, targets, temperatures, alphas).sum()

        result = fit(
            stack, batches, loss_fn, epochs=config.student_epochs, val_data=(dataset.val.x, dataset.val.y), lr=config.student_lr,
            schedule="cosine", checkpoint=run_dir / f"students_seed{seed}_from{first}.ckpt", seed=seed, amp_dtype=amp, device=device,
            description=f"students {first + 1}-{first + len(chunk)} of {len(members)}, seed {seed}",
        )
        seconds += result.train_seconds
        test_logits = predict_logits(stack, dataset.test.x, amp_dtype=amp, device=device)
        for index, (kind, temperature, alpha) in enumerate(chunk):
            rows.append({"seed": seed, "model": kind, "temperature": temperature if kind == "kd" else np.nan,
                         "alpha": alpha if kind == "kd" else np.nan, "val_accuracy": result.best_val_score[index],
                         "best_epoch": result.best_epoch[index], **_scores_row(test_logits[index], dataset.test.y)})
            if (kind, temperature, alpha) == ("kd", *config.headline):
                kept["kd"] = stack.member(index)
            elif kind == "scratch":
                kept["scratch"] = stack.member(index)
    return rows, kept, seconds


def seed_models(
    config: StudyConfig, dataset: kd_data.ImageData, seed: int, *, run_root: Path | None = None,
    device: str | torch.device | None = None,
) -> dict[str, nn.Module]:
    """The teacher, the headline KD student and the scratch student of ``seed`` (eval mode, CPU), trained
    as :func:`run_study` trains them, or read from its checkpoints when that run is finished."""
    dataset = study_dataset(config, dataset)
    run_dir = run_dir_for(config, run_root)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    teacher, _, soft_targets = mnist_teacher.train_teacher(teacher_config(config, run_root), dataset, seed, device)
    _, students, _ = _train_students(config, dataset, seed, soft_targets, run_dir, amp, device)
    return {name: model.cpu().eval() for name, model in {"teacher": teacher, **students}.items()}


def run_study(
    config: StudyConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None, device: str | torch.device | None = None
) -> StudyOutcome:
    """Train teachers and students for every seed, resuming finished work from checkpoints.

    The students' checkpoints go to ``run_root / config.key()`` (default root:
    ``kdcourse.paths.runs_dir() / "mnist_distillation"``), so another configuration never reuses them;
    the teachers are the course's (:mod:`kdcourse.studies.mnist_teacher`, under ``run_root`` when given).
    ``dataset`` must have been loaded with ``val_size=config.val_size``. ``device`` defaults to the
    GPU when there is one, else the CPU.
    """
    if ("kd", *config.headline) not in _grid_members(config):
        raise ValueError(f"headline (T, α) = {config.headline} is not a point of the grid")
    dataset = study_dataset(config, dataset)
    run_dir = run_dir_for(config, run_root)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    rows: list[dict] = []
    kept: dict[str, nn.Module] = {}
    train_seconds = 0.0
    epoch_seconds: dict[str, float] = {}
    for seed in config.seeds:
        teacher, teacher_fit, soft_targets = mnist_teacher.train_teacher(teacher_config(config, run_root), dataset, seed, device)
        train_seconds += teacher_fit.train_seconds
        epoch_seconds["teacher"] = teacher_fit.train_seconds / len(teacher_fit.history)
        teacher_test = predict_logits(teacher, dataset.test.x, amp_dtype=amp, device=device)
        rows.append({"seed": seed, "model": "teacher", "temperature": np.nan, "alpha": np.nan,
                     "val_accuracy": teacher_fit.best_val_score, "best_epoch": teacher_fit.best_epoch,
                     **_scores_row(teacher_test, dataset.test.y)})
        student_rows, students, seconds = _train_students(config, dataset, seed, soft_targets, run_dir, amp, device)
        rows += student_rows
        train_seconds += seconds
        epoch_seconds["students (all arms of one seed)"] = seconds / config.student_epochs
        if seed == config.seeds[0]:
            kept = {name: model.cpu().eval() for name, model in {"teacher": teacher, **students}.items()}
    return StudyOutcome(config, pd.DataFrame(rows), kept, train_seconds, epoch_seconds)


def grid_table(runs: pd.DataFrame, column: str = "test_accuracy") -> pd.DataFrame:
    """Mean and std over seeds of ``column`` for every (T, α) of the KD grid; index (T, α)."""
    kd = runs[runs.model == "kd"]
    return kd.groupby(["temperature", "alpha"])[column].agg(["mean", "std", "count"])


def arm_accuracy(
    runs: pd.DataFrame, model: str, temperature: float | None = None, alpha: float | None = None,
    column: str = "test_accuracy",
) -> pd.Series:
    """``column`` of one arm of ``runs`` (``model`` ``teacher``, ``scratch``, or ``kd`` at ``temperature``, ``alpha``), indexed by seed."""
    rows = runs[runs.model == model]
    if model == "kd":
        rows = rows[(rows.temperature == temperature) & (rows.alpha == alpha)]
    return rows.set_index("seed")[column].rename(None)


def paired_comparison(
    runs: pd.DataFrame, temperature: float, alpha: float, baseline: tuple[float, float] | None = None,
    column: str = "test_accuracy",
) -> stats.Effect:
    """The KD student (T, α) against the scratch student (or the KD student at ``baseline`` = (T, α)), paired by seed.

    Both arms of a seed share the initial weights, the batches and the teacher, so the comparison is
    the course's paired effect (:func:`kdcourse.stats.paired_effect`): the per-seed differences of
    ``column`` in percentage points, their 95 % interval, paired t-test and verdict. Needs at least
    two seeds.
    """
    kd = arm_accuracy(runs, "kd", temperature, alpha, column)
    other = arm_accuracy(runs, "scratch", column=column) if baseline is None else arm_accuracy(runs, "kd", *baseline, column=column)
    return stats.paired_effect(kd, other)


def grid_effects(runs: pd.DataFrame, baseline: tuple[float, float] | None = None, column: str = "test_accuracy") -> pd.DataFrame:
    """:func:`paired_comparison` of every (T, α) of the KD grid against the scratch student (or ``baseline``).

    One row per grid point, index (T, α), columns the fields of :meth:`kdcourse.stats.Effect.as_dict`
    (``mean``, ``std``, ``low``, ``high``, ``p_value``, ``verdict``, ...). The baseline's own row is left out."""
    points = runs[runs.model == "kd"][["temperature", "alpha"]].drop_duplicates().itertuples(index=False)
    rows = {(t, a): paired_comparison(runs, t, a, baseline, column).as_dict() for t, a in points if (t, a) != baseline}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["temperature", "alpha"])
    return table.sort_index()
