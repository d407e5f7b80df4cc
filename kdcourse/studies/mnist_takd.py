"""Teacher-assistant distillation on MNIST (Mirzadeh et al. 2020).

A small student (a one-hidden-layer MLP) learns from the MNIST CNN teacher either directly, or
through a teacher assistant (TA): a mid-sized MLP that is first distilled from the teacher and then
serves as the student's teacher. Assistants of several widths show how the benefit depends on where
the assistant sits in the teacher–student gap, and one longer chain passes through all of them.

The teachers are those of the MNIST distillation study (same configuration, same checkpoint folder),
so a machine that has run that chapter trains no teacher here. Every arm of a seed starts from the
same initial student weights and sees the same batches: differences between arms are paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kdcourse import data as kd_data
from kdcourse import hardware, models, paths, stats
from kdcourse.kd import teachers
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.metrics import classification_scores
from kdcourse.train import FitResult, fit, predict_logits
from kdcourse.studies import common
from kdcourse.studies import mnist_teacher
from kdcourse.studies.common import config_key, study_dataset, with_overrides

__all__ = [
    "TakdConfig", "PROFILES", "TakdOutcome", "config_for", "run_study", "arm_summary", "paired_difference", "arm_effect",
]


@dataclass(frozen=True)
class TakdConfig:
    """Settings shared by every arm (the teacher is the course's, :mod:`kdcourse.studies.mnist_teacher`)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    student_hidden: int = 16  # one hidden layer: 784-16-10, 12,730 parameters
    assistant_hidden: tuple[int, ...] = (512, 128, 32)  # widest first: the long chain runs in this order
    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-3
    mixed_precision: bool = True

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder."""
        return config_key(self)


PROFILES: dict[str, TakdConfig] = {
    "smoke": TakdConfig(seeds=(0, 1), assistant_hidden=(64, 32), epochs=2, batch_size=64),
    "full": TakdConfig(),
}


def config_for(profile: str, **overrides: object) -> TakdConfig:
    """The configuration of ``profile`` with ``overrides`` applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


@dataclass
class TakdOutcome:
    """``runs``: one row per (seed, arm) with ``arm``, ``role`` (``teacher``, ``assistant``, ``student``),
    ``hidden`` (width, NaN for the teacher), ``parameters``, ``val_accuracy``, ``test_accuracy``, ``f1``;
    ``train_seconds``: training time of this study's networks (the teachers' is ``teacher_seconds``)."""

    config: TakdConfig
    runs: pd.DataFrame
    train_seconds: float
    teacher_seconds: float


def _fresh_mlp(hidden: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return models.mlp([hidden])


def _distil(
    model: nn.Module, soft_targets: torch.Tensor, dataset: kd_data.ImageData, config: TakdConfig, alpha: float,
    seed: int, checkpoint: Path, device: torch.device,
) -> FitResult:
    """Train ``model`` on the labels and ``soft_targets`` ``(N, 10)`` with the study's budget."""
    batches = kd_data.TensorBatches(dataset.train.x, dataset.train.y, soft_targets, batch_size=config.batch_size, seed=seed)

    return fit(
        model, batches, HintonKD(config.temperature, alpha), epochs=config.epochs, val_data=(dataset.val.x, dataset.val.y), lr=config.lr,
        schedule="cosine", checkpoint=checkpoint, seed=seed, device=device,
        amp_dtype=hardware.autocast_dtype(device, allowed=config.mixed_precision), description=checkpoint.stem,
    )


def run_study(
    config: TakdConfig, dataset: kd_data.ImageData, teacher_config: mnist_teacher.TeacherConfig, *,
    run_root: Path | None = None,
    device: str | torch.device | None = None,
) -> TakdOutcome:
    """Train assistants and students for every seed (resuming from checkpoints) and score them on the test set.

    ``teacher_config`` is the course teacher's (:mod:`kdcourse.studies.mnist_teacher`), trained or read
    from its checkpoints; ``dataset`` must have been loaded with its ``val_size``.
    """
    check_temperature(config.temperature)
    check_alpha(config.alpha)
    if config.student_hidden < 1 or any(h < 1 for h in config.assistant_hidden):
        raise ValueError("hidden widths must be >= 1")
    dataset = study_dataset(teacher_config, dataset)
    run_dir = (run_root or paths.runs_dir()) / "mnist_takd" / f"{config.key()}-{teacher_config.key()}"
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    rows: list[dict] = []
    train_seconds = teacher_seconds = 0.0

    def record(seed: int, arm: str, role: str, model: nn.Module, result: FitResult | None, hidden: float) -> None:
        logits = predict_logits(model, dataset.test.x, amp_dtype=amp, device=device)
        scores = classification_scores(logits, dataset.test.y)
        rows.append({"seed": seed, "arm": arm, "role": role, "hidden": hidden, "parameters": models.count_parameters(model),
                     "val_accuracy": result.best_val_score if result else float("nan"),
                     "test_accuracy": scores["accuracy"], "f1": scores["f1"]})

    for seed in config.seeds:
        teacher, teacher_fit, teacher_logits = mnist_teacher.train_teacher(teacher_config, dataset, seed, device)
        teacher_seconds += teacher_fit.train_seconds
        record(seed, "teacher", "teacher", teacher, teacher_fit, float("nan"))

        def student_from(soft_targets: torch.Tensor, arm: str, alpha: float) -> None:
            nonlocal train_seconds
            student = _fresh_mlp(config.student_hidden, seed)
            result = _distil(student, soft_targets, dataset, config, alpha, seed, run_dir / f"seed{seed}_{arm}.ckpt", device)
            train_seconds += result.train_seconds
            record(seed, arm, "student", student, result, config.student_hidden)

        student_from(teacher_logits, "no KD (labels only)", 0.0)
        student_from(teacher_logits, "KD from the teacher", config.alpha)
        previous_logits = teacher_logits
        for index, hidden in enumerate(config.assistant_hidden):
            # assistant distilled from the teacher, then the student from the assistant
            assistant = _fresh_mlp(hidden, seed)
            result = _distil(assistant, teacher_logits, dataset, config, config.alpha, seed, run_dir / f"seed{seed}_ta{hidden}.ckpt", device)
            train_seconds += result.train_seconds
            record(seed, f"TA {hidden} (from the teacher)", "assistant", assistant, result, hidden)
            assistant_logits = teachers.teacher_logits(assistant, dataset.train.x, cache=run_dir / f"seed{seed}_ta{hidden}_logits.pt", amp_dtype=amp, device=device)
            student_from(assistant_logits, f"via TA {hidden}", config.alpha)
            if len(config.assistant_hidden) > 1:
                # the long chain: each assistant learns from the previous one
                if index == 0:
                    chain_logits = assistant_logits
                else:
                    link = _fresh_mlp(hidden, seed)
                    result = _distil(link, previous_logits, dataset, config, config.alpha, seed, run_dir / f"seed{seed}_chain{hidden}.ckpt", device)
                    train_seconds += result.train_seconds
                    record(seed, f"TA {hidden} (in the chain)", "assistant", link, result, hidden)
                    chain_logits = teachers.teacher_logits(link, dataset.train.x, cache=run_dir / f"seed{seed}_chain{hidden}_logits.pt", amp_dtype=amp, device=device)
                previous_logits = chain_logits
        if len(config.assistant_hidden) > 1:
            chain = " → ".join(str(h) for h in config.assistant_hidden)
            student_from(previous_logits, f"via the chain {chain}", config.alpha)
    return TakdOutcome(config, pd.DataFrame(rows), train_seconds, teacher_seconds)


def arm_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (percent) of test accuracy per arm, in the order the arms were trained."""
    order = list(dict.fromkeys(runs.arm))
    table = runs.groupby("arm", sort=False).agg(
        role=("role", "first"), parameters=("parameters", "first"),
        mean=("test_accuracy", lambda v: 100 * v.mean()), std=("test_accuracy", lambda v: 100 * v.std(ddof=1)),
        seeds=("seed", "count"),
    )
    return table.loc[order]


def paired_difference(runs: pd.DataFrame, arm: str, baseline: str) -> dict[str, float]:
    """Per-seed test-accuracy difference ``arm − baseline`` in points: mean, std (ddof 1), seeds."""
    return common.paired_difference(runs[runs.arm == arm].set_index("seed").test_accuracy,
                                    runs[runs.arm == baseline].set_index("seed").test_accuracy)


def arm_effect(runs: pd.DataFrame, arm: str, baseline: str) -> stats.Effect:
    """The paired effect of ``arm`` over ``baseline`` on test accuracy (points, over the seeds both have)."""
    return stats.paired_effect(runs[runs.arm == arm].set_index("seed").test_accuracy,
                                 runs[runs.arm == baseline].set_index("seed").test_accuracy)
