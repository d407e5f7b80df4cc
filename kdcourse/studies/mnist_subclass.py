"""Subclass knowledge distillation on MNIST: learned subclasses (Müller et al. 2020) and known ones (Sajedi et al. 2022).

Two tasks are built from MNIST. The **binary** task (digits 0–4 against 5–9) has few classes, the
setting where the paper expects subclasses to matter; its digits are known subclasses (five per
class). The **ten-class** task is ordinary MNIST, as in the course reports. For every seed four
teachers with the small-CNN architecture (:func:`kdcourse.models.mnist_assistant`) are trained on the
same budget:

* ``digits``: 10 outputs, cross-entropy on the digits. It is the conventional teacher of the
  ten-class task and, read as 2 classes × 5 subclasses, the *known-subclass* teacher of the binary task;
* ``binary``: 2 outputs, the conventional teacher of the binary task;
* ``binary learned``: 2 × 5 subclass logits, cross-entropy on the binary class logits (log-sum-exp
  over subclasses) plus the auxiliary loss that spreads examples over subclasses;
* ``ten-class learned``: 10 × 2 subclass logits, trained the same way on the digits.

The students are the course's 784-784-784 MLP with as many outputs as their teacher's targets.
Every student arm of a seed starts from the same hidden-layer weights, sees the same batches and
has the same budget (epochs, T, α); differences between arms are paired by seed. The binary
students are trained twice: on the whole training split and on a small labelled subset, where the
paper reports the largest gains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse import data as kd_data
from kdcourse import hardware, models, paths
from kdcourse.kd import teachers
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.kd.subclass import MNIST_SUBCLASSES_PER_CLASS, SubclassKD, class_logits_from_subclasses, contingency, mnist_superclass, subclass_assignments, subclass_auxiliary_loss, subclass_digit_nmi, subclass_usage
from kdcourse.train import fit, predict_logits
from kdcourse.studies.common import config_key, paired_difference, study_dataset, with_overrides

__all__ = ["SubclassConfig", "PROFILES", "TEACHERS", "SubclassOutcome", "config_for", "run_study", "arm_summary", "paired_against"]

# teacher name → (task, learned subclasses?); see _subclasses_per_class for their output layout
TEACHERS: dict[str, tuple[str, bool]] = {
    "digits": ("ten-class", False),
    "binary": ("binary", False),
    "binary learned": ("binary", True),
    "ten-class learned": ("ten-class", True),
}


@dataclass(frozen=True)
class SubclassConfig:
    """Settings shared by every arm."""

    seeds: tuple[int, ...] = (0, 1, 2)
    teacher_epochs: int = 10
    teacher_batch_size: int = 128
    teacher_lr: float = 1e-3
    teacher_shift: int = 2  # random translation (pixels) of the teachers' training images
    aux_weight: float = 1.0  # weight of the auxiliary loss of the learned-subclass teachers
    aux_temperature: float = 1.0
    ten_class_subclasses: int = 2  # learned subclasses per digit of the ten-class teacher
    student_epochs: int = 10
    student_batch_size: int = 256
    student_lr: float = 3e-3
    temperature: float = 4.0
    alpha: float = 0.5
    limited_samples: int = 1000  # labelled images of the binary students' small-data regime
    limited_epochs: int = 100  # epochs in that regime (1,000 images are 4 batches per epoch)
    train_samples: int | None = None
    val_size: int = 5000
    mixed_precision: bool = True

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder."""
        return config_key(self)


PROFILES: dict[str, SubclassConfig] = {
    "smoke": SubclassConfig(seeds=(0, 1), teacher_epochs=1, student_epochs=1, teacher_batch_size=64, student_batch_size=64,
                            limited_samples=128, limited_epochs=2, train_samples=512),
    "full": SubclassConfig(),
}


def config_for(profile: str, **overrides: object) -> SubclassConfig:
    """The configuration of ``profile`` with ``overrides`` applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


@dataclass
class SubclassOutcome:
    """Results of :func:`run_study`.

    ``teachers``: one row per (seed, teacher) with ``outputs``, ``test_accuracy`` on its own task and
    ``binary_test_accuracy`` (every teacher read as a 0–4 / 5–9 classifier). ``students``: one row per
    (seed, task, regime, arm) with ``val_accuracy``, ``test_accuracy`` (fractions) and ``seconds``.
    ``subclasses``: one row per (seed, learned teacher) with the NMI between its subclass assignments
    and the digits on the test set, and the smallest and largest fraction of test images in one subclass.
    ``contingency``: seed → ``(10, 10)`` counts of the binary learned teacher (row: subclass, column: digit).
    ``models``: the teachers of the first seed, by name.
    """

    config: SubclassConfig
    teachers: pd.DataFrame
    students: pd.DataFrame
    subclasses: pd.DataFrame
    contingency: dict[int, np.ndarray]
    models: dict[str, nn.Module]
    train_seconds: float = 0.0
    teacher_seconds: float = 0.0
    student_seconds: float = 0.0


def _class_map(subclasses_per_class: int) -> Callable[[Tensor], Tensor]:
    """Outputs ``(N, C·s)`` → class logits ``(N, C)``: log-sum-exp over each class's subclasses (identity for s = 1)."""
    if subclasses_per_class == 1:
        return lambda outputs: outputs
    return lambda outputs: class_logits_from_subclasses(outputs, subclasses_per_class)


def _subclasses_per_class(task: str, learned: bool, config: SubclassConfig) -> int:
    """Outputs per class of a teacher: 1 (plain class logits), 5 for the binary task's learned subclasses
    (as many as its digits per class), ``config.ten_class_subclasses`` for the ten-class task's."""
    if not learned:
        return 1
    return MNIST_SUBCLASSES_PER_CLASS if task == "binary" else config.ten_class_subclasses


def _accuracy(logits: Tensor, targets: Tensor) -> float:
    return (logits.argmax(1) == targets).float().mean().item()


def _task_labels(task: str, digits: Tensor) -> Tensor:
    return mnist_superclass(digits) if task == "binary" else digits


def _teacher_loss(subclasses_per_class: int, learned: bool, config: SubclassConfig) -> Callable[..., Tensor]:
    if not learned:
        return lambda outputs, targets, *_: F.cross_entropy(outputs, targets)

    def loss_fn(outputs: Tensor, targets: Tensor, *_: Tensor) -> Tensor:
        hard = F.cross_entropy(class_logits_from_subclasses(outputs, subclasses_per_class), targets)
        return hard + config.aux_weight * subclass_auxiliary_loss(outputs, config.aux_temperature)

    return loss_fn


def _check(config: SubclassConfig) -> None:
    check_temperature(config.temperature)
    check_temperature(config.aux_temperature)
    check_alpha(config.alpha)
    if config.aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got {config.aux_weight}")
    if config.ten_class_subclasses < 2:
        raise ValueError(f"ten_class_subclasses must be >= 2 (1 is the conventional teacher), got {config.ten_class_subclasses}")
    if config.limited_samples < 1 or config.limited_epochs < 1:
        raise ValueError("limited_samples and limited_epochs must be >= 1")


def run_study(config: SubclassConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> SubclassOutcome:
    """Train the four teachers and every student arm for each seed (resuming from checkpoints); see the module docstring.

    ``dataset`` must have been loaded with ``val_size=config.val_size``.
    """
    _check(config)
    dataset = study_dataset(config, dataset)
    if config.limited_samples > len(dataset.train):
        raise ValueError(f"limited_samples ({config.limited_samples}) exceeds the {len(dataset.train)} training images")
    run_dir = (run_root or paths.runs_dir()) / "mnist_subclass" / config.key()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    teacher_rows, student_rows, subclass_rows = [], [], []
    tables: dict[int, np.ndarray] = {}
    kept: dict[str, nn.Module] = {}
    teacher_seconds = student_seconds = 0.0

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        return kd_data.random_shift(x, generator, config.teacher_shift)

    for seed in config.seeds:
        logits: dict[str, Tensor] = {}
        for name, (task, learned) in TEACHERS.items():
            s = _subclasses_per_class(task, learned, config)
            num_classes = 2 if task == "binary" else 10
            torch.manual_seed(seed)
            teacher = models.mnist_assistant(num_outputs=num_classes * s)
            batches = kd_data.TensorBatches(dataset.train.x, _task_labels(task, dataset.train.y), batch_size=config.teacher_batch_size,
                                            seed=seed, transform=augment if config.teacher_shift > 0 else None)
            tag = name.replace(" ", "_")
            result = fit(
                teacher, batches, _teacher_loss(s, learned, config), epochs=config.teacher_epochs,
                val_data=(dataset.val.x, _task_labels(task, dataset.val.y)), lr=config.teacher_lr, schedule="cosine", seed=seed,
                device=device, amp_dtype=amp, checkpoint=run_dir / f"seed{seed}_teacher_{tag}.ckpt", description=f"teacher {name}",
                class_logits=_class_map(s),
            )
            teacher_seconds += result.train_seconds
            logits[name] = teachers.teacher_logits(teacher, dataset.train.x, cache=run_dir / f"seed{seed}_teacher_{tag}_logits.pt",
                                                  amp_dtype=amp, device=device)
            test_outputs = predict_logits(teacher, dataset.test.x, amp_dtype=amp, device=device)
            class_logits = _class_map(s)(test_outputs)
            binary_logits = class_logits if task == "binary" else class_logits_from_subclasses(class_logits, MNIST_SUBCLASSES_PER_CLASS)
            teacher_rows.append({
                "seed": seed, "teacher": name, "task": task, "outputs": num_classes * s,
                "val_accuracy": result.best_val_score,
                "test_accuracy": _accuracy(class_logits, _task_labels(task, dataset.test.y)),
                "binary_test_accuracy": _accuracy(binary_logits, mnist_superclass(dataset.test.y)),
                "seconds": result.train_seconds,
            })
            if learned:
                assignments = subclass_assignments(test_outputs, s)
                usage = subclass_usage(assignments, num_classes * s)
                subclass_rows.append({"seed": seed, "teacher": name, "subclasses": num_classes * s,
                                      "nmi_with_digits": subclass_digit_nmi(assignments, dataset.test.y),
                                      "smallest_share": usage.min().item(), "largest_share": usage.max().item()})
                if name == "binary learned":
                    tables[seed] = contingency(assignments, dataset.test.y, num_classes * s).numpy()
            if seed == config.seeds[0]:
                kept[name] = teacher.cpu().eval()

        binary_logits_of_learned = class_logits_from_subclasses(logits["binary learned"], MNIST_SUBCLASSES_PER_CLASS)
        arms = [
            # (task, arm, student outputs, soft targets, loss)
            ("binary", "no KD", 2, logits["binary"], _plain(config, 0.0)),
            ("binary", "KD from the binary teacher", 2, logits["binary"], _plain(config, config.alpha)),
            ("binary", "KD from the learned teacher's class logits", 2, binary_logits_of_learned, _plain(config, config.alpha)),
            ("binary", "learned-subclass KD", 2 * MNIST_SUBCLASSES_PER_CLASS, logits["binary learned"],
             _subclass(config, MNIST_SUBCLASSES_PER_CLASS)),
            ("binary", "known-subclass KD", 2 * MNIST_SUBCLASSES_PER_CLASS, logits["digits"], _subclass(config, MNIST_SUBCLASSES_PER_CLASS)),
            ("ten-class", "no KD", 10, logits["digits"], _plain(config, 0.0)),
            ("ten-class", "KD from the digit teacher", 10, logits["digits"], _plain(config, config.alpha)),
            ("ten-class", "learned-subclass KD", 10 * config.ten_class_subclasses, logits["ten-class learned"],
             _subclass(config, config.ten_class_subclasses)),
            ("ten-class", "KD from the learned teacher's class logits", 10,
             class_logits_from_subclasses(logits["ten-class learned"], config.ten_class_subclasses), _plain(config, config.alpha)),
        ]
        limited = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[: config.limited_samples]
        regimes = [("all labels", None, config.student_epochs), (f"{config.limited_samples} labels", limited, config.limited_epochs)]
        for regime, subset, epochs in regimes:
            for task, arm, outputs, soft, loss_fn in arms:
                if subset is not None and task != "binary":
                    continue
                x, y = dataset.train.x, _task_labels(task, dataset.train.y)
                if subset is not None:
                    x, y, soft = x[subset], y[subset], soft[subset]
                torch.manual_seed(seed)  # the same hidden-layer weights for every arm of the seed
                student = models.mlp([784, 784], num_classes=outputs)
                batches = kd_data.TensorBatches(x, y, soft, batch_size=config.student_batch_size, seed=seed)
                per_class = outputs // (2 if task == "binary" else 10)
                tag = f"{task}_{regime}_{arm}".replace(" ", "_").replace("'", "").replace(",", "")
                result = fit(
                    student, batches, loss_fn, epochs=epochs, val_data=(dataset.val.x, _task_labels(task, dataset.val.y)),
                    lr=config.student_lr, schedule="cosine", seed=seed, device=device, amp_dtype=amp,
                    checkpoint=run_dir / f"seed{seed}_student_{tag}.ckpt", description=f"{task} student {arm} ({regime})",
                    class_logits=_class_map(per_class),
                )
                student_seconds += result.train_seconds
                test_outputs = predict_logits(student, dataset.test.x, amp_dtype=amp, device=device)
                class_logits = _class_map(per_class)(test_outputs)
                student_rows.append({
                    "seed": seed, "task": task, "regime": regime, "arm": arm, "outputs": outputs,
                    "val_accuracy": result.best_val_score,
                    "test_accuracy": _accuracy(class_logits, _task_labels(task, dataset.test.y)),
                    "seconds": result.train_seconds,
                })
    return SubclassOutcome(
        config, pd.DataFrame(teacher_rows), pd.DataFrame(student_rows), pd.DataFrame(subclass_rows), tables, kept,
        train_seconds=teacher_seconds + student_seconds, teacher_seconds=teacher_seconds, student_seconds=student_seconds,
    )


def _plain(config: SubclassConfig, alpha: float) -> HintonKD:
    """Conventional distillation (α = 0: cross-entropy only) with the study's temperature."""
    return HintonKD(config.temperature, alpha)


def _subclass(config: SubclassConfig, subclasses_per_class: int) -> SubclassKD:
    """Subclass distillation with the study's temperature and α."""
    return SubclassKD(subclasses_per_class, config.temperature, config.alpha)


def arm_summary(students: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (percent) of student test accuracy per (task, regime, arm), in training order."""
    return students.groupby(["task", "regime", "arm"], sort=False).agg(
        mean=("test_accuracy", lambda v: 100 * v.mean()), std=("test_accuracy", lambda v: 100 * v.std(ddof=1)),
        seeds=("seed", "count"),
    )


def paired_against(students: pd.DataFrame, task: str, regime: str, baseline: str) -> pd.DataFrame:
    """Every arm of (task, regime) minus ``baseline``, per seed, in points: mean, std, seeds."""
    rows = students[(students.task == task) & (students.regime == regime)]
    reference = rows[rows.arm == baseline].set_index("seed").test_accuracy
    out = {arm: paired_difference(group.set_index("seed").test_accuracy, reference)
           for arm, group in rows.groupby("arm", sort=False) if arm != baseline}
    return pd.DataFrame(out).T
