"""Distillation with a nuclear-norm penalty on the student's first layer, and what the penalty buys.

Every student is trained with ``α · KD + (1 − α) · CE + β · ‖W₁‖_*`` over a grid of α and β
(β = 0 is plain distillation, α = 0 no distillation). After training, its first layer ``W₁`` is
replaced by rank-``r`` truncated SVDs for a range of ranks; the smallest rank whose validation
accuracy stays within ``rank_tolerance`` points of the dense student is the one reported, with its
test accuracy, multiply-accumulates (MACs) and measured latency. The penalty is useful if it lets a
student keep its accuracy at a much smaller rank than the unpenalised student.

Two data sets: MNIST, with the CNN teacher of the distillation chapter (the same trained teachers
and cached logits) and the 784-784-784 MLP student, and EuroSAT RGB (64×64 land-cover patches, as in
the source slides' remote-sensing studies), with a ResNet-18 teacher trained here and a
12,288-512-512-10 MLP student. Every arm of a seed starts from the same student weights and sees the
same batches.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torchvision
from torch import Tensor, nn

from kdcourse import data as kd_data
from kdcourse import hardware, models, paths
from kdcourse.kd import teachers
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.lowrank import NuclearPenalty, first_linear, linear_macs, nuclear_norm, replace_first_linear, singular_values
from kdcourse.stats import Effect, paired_effect
from kdcourse.metrics import classification_scores
from kdcourse.costs import count_macs, measure_latency
from kdcourse.train import fit, predict_logits
from kdcourse.studies import mnist_teacher
from kdcourse.studies.common import config_key, study_dataset, with_overrides

__all__ = [
    "NuclearConfig", "PROFILES", "EUROSAT_PROFILES", "NuclearTask", "NuclearOutcome", "config_for", "mnist_task",
    "eurosat_task", "run_study", "energy_rank", "arm_summary", "effects_against_unpenalised", "effects_against_undistilled",
    "effect_table", "paired_against_unpenalised", "cost_models", "repeated_latency", "latency_summary",
]


@dataclass(frozen=True)
class NuclearConfig:
    """Settings shared by every arm of one data set."""

    seeds: tuple[int, ...] = (0, 1, 2)
    alphas: tuple[float, ...] = (0.0, 0.5, 0.9)
    betas: tuple[float, ...] = (0.0, 3e-4, 1e-3, 3e-3, 1e-2)
    temperature: float = 4.0
    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-3
    penalty_every: int = 10  # lazy penalty: every 10th step, weighted 10 β (the SVD dominates a CPU step)
    ranks: tuple[int, ...] = (8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
    rank_tolerance: float = 0.1  # points of validation accuracy a factorised student may lose
    teacher_epochs: int = 15  # EuroSAT teacher only (the MNIST teacher is the course's, mnist_teacher)
    teacher_lr: float = 1e-3
    teacher_batch_size: int = 128
    train_samples: int | None = None  # EuroSAT only: MNIST uses the course teacher's training split
    mixed_precision: bool = True

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder."""
        return config_key(self)


PROFILES: dict[str, NuclearConfig] = {
    "smoke": NuclearConfig(seeds=(0, 1), alphas=(0.0, 0.5), betas=(0.0, 1e-2), epochs=1, batch_size=64, penalty_every=2,
                           ranks=(8, 64)),
    "full": NuclearConfig(),
}
EUROSAT_PROFILES: dict[str, NuclearConfig] = {
    "smoke": NuclearConfig(seeds=(0,), alphas=(0.0, 0.5), betas=(0.0, 1e-2), epochs=1, batch_size=16, penalty_every=2,
                           ranks=(4, 8), teacher_epochs=1, teacher_batch_size=16),
    "full": NuclearConfig(epochs=30, teacher_epochs=30),
}


def config_for(profile: str, dataset: str = "mnist", **overrides: object) -> NuclearConfig:
    """The configuration of ``profile`` for ``dataset`` (``"mnist"`` or ``"eurosat"``) with ``overrides`` applied."""
    table = {"mnist": PROFILES, "eurosat": EUROSAT_PROFILES}
    if dataset not in table:
        raise ValueError(f"dataset must be 'mnist' or 'eurosat', got {dataset!r}")
    return with_overrides(table[dataset][profile], **overrides)


@dataclass
class NuclearTask:
    """A data set with its student and teacher.

    ``teacher(seed, run_dir)`` returns the trained teacher, its logits ``(N, C)`` on ``data.train.x`` and
    its training time in seconds (0 when it was loaded from a checkpoint another study wrote).
    """

    name: str
    data: kd_data.ImageData
    student: Callable[[], nn.Sequential]
    teacher: Callable[[int, Path], tuple[nn.Module, Tensor, float]]
    input_shape: tuple[int, ...]


def mnist_task(dataset: kd_data.ImageData, teacher_config: mnist_teacher.TeacherConfig, *,
               device: torch.device | None = None) -> NuclearTask:
    """MNIST with the course's teachers (:mod:`kdcourse.studies.mnist_teacher`, trained or read from their
    checkpoints) and the course student."""
    dataset = study_dataset(teacher_config, dataset)  # the teachers' split, so their cached logits fit

    def teacher(seed: int, _: Path) -> tuple[nn.Module, Tensor, float]:
        model, result, logits = mnist_teacher.train_teacher(teacher_config, dataset, seed, device)
        return model, logits, result.train_seconds

    return NuclearTask("MNIST", dataset, models.mnist_student, teacher, (1, 28, 28))


def eurosat_task(config: NuclearConfig, dataset: kd_data.ImageData, *, device: torch.device | None = None) -> NuclearTask:
    """EuroSAT with a ResNet-18 teacher (torchvision, trained from scratch here) and a 12,288-512-512-10 MLP student."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    dataset = replace(dataset, train=dataset.train.head(config.train_samples))
    channels, height, width = dataset.train.x.shape[1:]

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        flipped = torch.where(torch.rand(len(x), 1, 1, 1, generator=generator) < 0.5, x.flip(3), x)
        return kd_data.random_shift(flipped, generator, 4, fill=0.0)

    def teacher(seed: int, run_dir: Path) -> tuple[nn.Module, Tensor, float]:
        torch.manual_seed(seed)
        model = torchvision.models.resnet18(weights=None, num_classes=10).to(memory_format=hardware.CONV_MEMORY_FORMAT)
        batches = kd_data.TensorBatches(dataset.train.x, dataset.train.y, batch_size=config.teacher_batch_size, seed=seed, transform=augment)
        result = fit(model, batches, epochs=config.teacher_epochs, val_data=(dataset.val.x, dataset.val.y), lr=config.teacher_lr,
                     weight_decay=0.05, schedule="cosine", seed=seed, device=device, amp_dtype=amp,
                     checkpoint=run_dir / f"teacher_seed{seed}.ckpt", description=f"EuroSAT teacher seed {seed}")
        logits = teachers.teacher_logits(model, dataset.train.x, cache=run_dir / f"teacher_logits_seed{seed}.pt", amp_dtype=amp, device=device)
        return model, logits, result.train_seconds

    def student() -> nn.Sequential:
        return models.mlp([512, 512], in_features=channels * height * width)

    return NuclearTask("EuroSAT", dataset, student, teacher, (channels, height, width))


@dataclass
class NuclearOutcome:
    """Results of :func:`run_study`.

    ``runs``: one row per (seed, α, β): ``val_accuracy``, ``test_accuracy``, ``precision``, ``recall``,
    ``f1`` (macro, test), ``nuclear_norm`` and ``energy_rank`` of the trained ``W₁``, the
    ``chosen_rank`` (smallest rank within tolerance on validation), its ``chosen_test_accuracy`` and
    ``chosen_macs`` (whole student, ptflops), and ``seconds`` of training.
    ``truncation``: one row per (seed, α, β, rank) with ``first_layer_macs``, ``val_accuracy``, ``test_accuracy``.
    ``spectra``: (seed, α, β) → singular values of ``W₁``, descending.
    ``cost``: one row per model (teacher, dense student, student with rank r): ``macs``, ``parameters``,
    latency in ms for one image and per image in a batch of 256 (this machine).
    ``teachers``: one row per seed with the teacher's test ``accuracy`` and ``f1``.
    """

    config: NuclearConfig
    task: str
    runs: pd.DataFrame
    truncation: pd.DataFrame
    spectra: dict[tuple[int, float, float], Tensor]
    cost: pd.DataFrame
    teachers: pd.DataFrame
    train_seconds: float
    teacher_seconds: float


def energy_rank(singular: Tensor, energy: float = 0.99) -> int:
    """Smallest ``r`` whose leading ``r`` singular values hold ``energy`` of ``Σ σ²`` (the squared Frobenius norm)."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    share = singular.double().pow(2).cumsum(0) / singular.double().pow(2).sum()
    return int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype) - 1e-12).item()) + 1


def _check(config: NuclearConfig, max_rank: int) -> None:
    check_temperature(config.temperature)
    for alpha in config.alphas:
        check_alpha(alpha)
    if any(b < 0 for b in config.betas) or 0.0 not in config.betas:
        raise ValueError(f"betas must be >= 0 and include 0 (the unpenalised student), got {config.betas}")
    if not config.ranks or any(not 1 <= r <= max_rank for r in config.ranks):
        raise ValueError(f"ranks must lie in [1, {max_rank}] for this student's first layer, got {config.ranks}")
    if config.rank_tolerance < 0:
        raise ValueError(f"rank_tolerance must be >= 0 points, got {config.rank_tolerance}")


def run_study(config: NuclearConfig, task: NuclearTask, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> NuclearOutcome:
    """Train the α × β grid of students for every seed (resuming from checkpoints), factorise and score them."""
    layer = first_linear(task.student())
    _check(config, min(layer.in_features, layer.out_features))
    run_dir = (run_root or paths.runs_dir()) / "nuclear" / task.name.lower() / config.key()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    data = task.data
    rows, truncation, teacher_rows = [], [], []
    spectra: dict[tuple[int, float, float], Tensor] = {}
    train_seconds = teacher_seconds = 0.0
    macs_of_rank: dict[int, int] = {}

    def accuracy(model: nn.Module, split: kd_data.ImageSplit) -> float:
        return classification_scores(predict_logits(model, split.x, amp_dtype=amp, device=device), split.y)["accuracy"]

    for seed in config.seeds:
        teacher, soft_targets, seconds = task.teacher(seed, run_dir)
        teacher_seconds += seconds
        scores = classification_scores(predict_logits(teacher, data.test.x, amp_dtype=amp, device=device), data.test.y)
        teacher_rows.append({"seed": seed, "accuracy": scores["accuracy"], "f1": scores["f1"]})
        batches = kd_data.TensorBatches(data.train.x, data.train.y, soft_targets, batch_size=config.batch_size, seed=seed)
        for alpha in config.alphas:
            for beta in config.betas:
                torch.manual_seed(seed)
                student = task.student()
                method = NuclearPenalty(HintonKD(config.temperature, alpha), student, beta, every=config.penalty_every)
                result = fit(
                    student, batches, method, epochs=config.epochs,
                    val_data=(data.val.x, data.val.y), lr=config.lr, schedule="cosine", seed=seed, device=device, amp_dtype=amp,
                    checkpoint=run_dir / f"seed{seed}_alpha{alpha:g}_beta{beta:g}.ckpt",
                    description=f"{task.name} student α={alpha:g} β={beta:g} seed {seed}",
                )
                train_seconds += result.train_seconds
                student = student.cpu().eval()
                weight = first_linear(student).weight
                spectrum = singular_values(weight)
                spectra[(seed, alpha, beta)] = spectrum
                dense_val = accuracy(student, data.val)
                scores = classification_scores(predict_logits(student, data.test.x, amp_dtype=amp, device=device), data.test.y)
                chosen = None
                for rank in sorted(config.ranks):
                    factorised = replace_first_linear(student, rank)
                    val, test = accuracy(factorised, data.val), accuracy(factorised, data.test)
                    truncation.append({"seed": seed, "alpha": alpha, "beta": beta, "rank": rank,
                                       "first_layer_macs": linear_macs(weight.shape[1], weight.shape[0], rank),
                                       "val_accuracy": val, "test_accuracy": test})
                    if chosen is None and val >= dense_val - config.rank_tolerance / 100:
                        chosen = (rank, test)
                    if rank not in macs_of_rank:
                        macs_of_rank[rank] = count_macs(factorised, task.input_shape)
                chosen_rank, chosen_test = chosen if chosen is not None else (None, scores["accuracy"])
                rows.append({
                    "seed": seed, "alpha": alpha, "beta": beta, "val_accuracy": dense_val, "test_accuracy": scores["accuracy"],
                    "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
                    "nuclear_norm": nuclear_norm(weight.detach()).item(), "energy_rank": energy_rank(spectrum),
                    "chosen_rank": chosen_rank if chosen_rank is not None else float("nan"), "chosen_test_accuracy": chosen_test,
                    "chosen_macs": macs_of_rank[chosen_rank] if chosen_rank is not None else count_macs(student, task.input_shape),
                    "seconds": result.train_seconds,
                })
    cost = _cost_table(task, teacher, macs_of_rank, config.ranks)
    return NuclearOutcome(config, task.name, pd.DataFrame(rows), pd.DataFrame(truncation), spectra, cost,
                          pd.DataFrame(teacher_rows), train_seconds, teacher_seconds)


def cost_models(student: Callable[[], nn.Module], teacher: nn.Module, ranks: tuple[int, ...]) -> list[tuple[str, nn.Module, int | None]]:
    """``(name, model, rank)`` of the teacher, the dense student and the student with ``W₁`` at each rank, on the CPU in float32.

    Latency and MACs depend on the architecture only, not on the trained weights, so ``student`` may be a fresh one."""
    dense = student().eval()
    candidates: list[tuple[str, nn.Module, int | None]] = [("teacher", teacher.cpu().eval(), None), ("student (dense)", dense, None)]
    candidates += [(f"student, W₁ at rank {r}", replace_first_linear(dense, r), r) for r in sorted(ranks)]
    return [(name, model.float(), rank) for name, model, rank in candidates]


def _cost_table(task: NuclearTask, teacher: nn.Module, macs_of_rank: dict[int, int], ranks: tuple[int, ...]) -> pd.DataFrame:
    """MACs, parameters and CPU latency of the teacher, the dense student and the student factorised at each rank."""
    rows = []
    for name, model, rank in cost_models(task.student, teacher, ranks):
        rows.append({"model": name, "rank": rank, "parameters": models.count_parameters(model),
                     "macs": macs_of_rank[rank] if rank is not None else count_macs(model, task.input_shape),
                     "latency_ms_batch1": measure_latency(model, task.input_shape, 1, repeats=50),
                     "latency_ms_per_image_batch256": measure_latency(model, task.input_shape, 256, repeats=10)})
    return pd.DataFrame(rows)


def repeated_latency(candidates: list[tuple[str, nn.Module, int | None]], input_shape: tuple[int, ...], *, repeats: int = 5,
                     batch_sizes: tuple[int, ...] = (1, 256), threads: int | None = None) -> pd.DataFrame:
    """Time every candidate ``repeats`` times in this process, one repeat of all of them after another.

    Each timing is :func:`kdcourse.costs.measure_latency` (the median of 50 forward passes for a batch of
    one, of 10 for larger batches, after a warm-up). Taking the repeats in turns spreads a change of load
    over all models alike. ``threads`` sets PyTorch's intra-op threads for the measurement (``None``:
    as they are) and restores them after. One row per (model, batch, repeat): ``model``, ``rank``,
    ``threads``, ``batch``, ``repeat``, ``ms_per_image``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        rows = []
        for repeat in range(repeats):
            for name, model, rank in candidates:
                for batch in batch_sizes:
                    rows.append({"model": name, "rank": rank, "threads": used, "batch": batch, "repeat": repeat,
                                 "ms_per_image": measure_latency(model, input_shape, batch, repeats=50 if batch == 1 else 10)})
    finally:
        torch.set_num_threads(previous)
    return pd.DataFrame(rows)


def latency_summary(timings: pd.DataFrame) -> pd.DataFrame:
    """Per (model, threads, batch) of :func:`repeated_latency`: the ``median``, ``low`` and ``high`` over repeats
    (ms per image), ``spread`` = (high − low) / median in percent, and ``repeats``; models in their first order."""
    order = {name: i for i, name in enumerate(dict.fromkeys(timings.model))}
    rows = []
    for (name, threads, batch), group in timings.groupby(["model", "threads", "batch"], sort=False):
        values = group.ms_per_image.tolist()
        median = statistics.median(values)
        rows.append({"model": name, "rank": group["rank"].iloc[0], "threads": threads, "batch": batch, "median": median,
                     "low": min(values), "high": max(values), "spread": 100 * (max(values) - min(values)) / median,
                     "repeats": len(values)})
    table = pd.DataFrame(rows)
    return table.sort_values(["threads", "batch"], kind="stable").sort_values("model", key=lambda m: m.map(order), kind="stable") \
        .reset_index(drop=True)


def arm_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (percent for accuracies and F1) per (α, β)."""
    percent = ["test_accuracy", "precision", "recall", "f1", "chosen_test_accuracy"]
    scaled = runs.assign(**{c: runs[c] * 100 for c in percent})
    table = scaled.groupby(["alpha", "beta"])[percent + ["nuclear_norm", "energy_rank", "chosen_rank", "chosen_macs"]].agg(["mean", "std"])
    table.columns = [f"{c} {s}" for c, s in table.columns]
    return table


def _paired_effects(runs: pd.DataFrame, column: str, against: str, scale: float, unit: str) -> dict[tuple[float, float], Effect]:
    """For every (α, β) whose ``against`` (``"alpha"`` or ``"beta"``) is not 0: ``column`` minus the arm with
    ``against`` = 0 and the other setting the same, paired by seed. Arms with fewer than two seeds where
    both values are present (a missing chosen rank is NaN) are left out."""
    other = "beta" if against == "alpha" else "alpha"
    effects = {}
    for (alpha, beta), group in runs.groupby(["alpha", "beta"]):
        setting = {"alpha": alpha, "beta": beta}
        if setting[against] == 0:
            continue
        reference = runs[(runs[against] == 0) & (runs[other] == setting[other])].set_index("seed")[column]
        values = group.set_index("seed")[column]
        if pd.concat([values, reference], axis=1).dropna().shape[0] < 2:
            continue
        effects[(alpha, beta)] = paired_effect(values, reference, scale=scale, unit=unit)
    return effects


def effects_against_unpenalised(runs: pd.DataFrame, column: str = "test_accuracy", *, scale: float = 100.0,
                                unit: str = "points") -> dict[tuple[float, float], Effect]:
    """For every α and β > 0: the paired effect (:func:`kdcourse.stats.paired_effect`, by seed) of the penalty
    on ``column``, against the β = 0 student of the same α. Fractions become points by default; for ranks
    or MACs pass ``scale=1`` and a ``unit``."""
    return _paired_effects(runs, column, "beta", scale, unit)


def effects_against_undistilled(runs: pd.DataFrame, column: str = "test_accuracy", *, scale: float = 100.0,
                                unit: str = "points") -> dict[tuple[float, float], Effect]:
    """For every α > 0 and β: the paired effect of distillation on ``column``, against the α = 0 student of the same β."""
    return _paired_effects(runs, column, "alpha", scale, unit)


def effect_table(effects: dict[tuple[float, float], Effect]) -> pd.DataFrame:
    """The effects as a table indexed by (α, β), one column per field of :meth:`Effect.as_dict` (with the verdict)."""
    rows = [{"alpha": alpha, "beta": beta, **effect.as_dict()} for (alpha, beta), effect in effects.items()]
    columns = ["alpha", "beta", *Effect(0, 0, 0, 0, 0, 0, 0, 1).as_dict()]
    return pd.DataFrame(rows, columns=columns).set_index(["alpha", "beta"])


def paired_against_unpenalised(runs: pd.DataFrame, column: str = "test_accuracy") -> pd.DataFrame:
    """For every α and β > 0: ``column`` minus the β = 0 student of the same α and seed, in points, as an
    :func:`effect_table` (``mean``, ``std``, ``n``, the intervals, ``p_value`` and ``verdict``)."""
    return effect_table(effects_against_unpenalised(runs, column))
