"""Transfer learning and distillation on MHIST (colorectal polyps: hyperplastic HP vs sessile serrated SSA).

Every network is an ImageNet backbone with a new two-way head (four ways for subclass students),
trained with the usual two phases:

1. *feature extraction*: the backbone frozen, only the new head is trained, on pooled features of
   the backbone computed once (:mod:`kdcourse.transfer`, which runs both phases);
2. *fine-tuning*: the backbone's last stage is unfrozen as well (its earlier stages stay frozen and
   their outputs are cached for all eight views of every training image) at a lower learning rate.

A network trained *from scratch* has no frozen part: all its layers train from random weights for
the fine-tuning phase's number of epochs, at the head's learning rate, on the same augmented
batches. The best epoch of every phase is selected on the validation AUC (a split of the official
training partition); the test partition is only ever evaluated.

Arms, all on the same seeds, splits and budgets (every student arm starts from the same student
head initialisation of its seed, and all see the same batches):

- ``teacher`` / ``teacher_scratch``, ``student`` / ``student_scratch``: pretrained against scratch;
- ``kd``: the pretrained student distilled from the teacher, (T, α) chosen on validation over a grid;
- ``known_skd``: subclass distillation with *known* subclasses read from the annotators' votes (a
  teacher head over 2 × 2 subclasses: clear and borderline HP, borderline and clear SSA);
- ``learned_skd``: subclass distillation with subclasses the teacher *learns* (Müller et al.'s
  auxiliary loss), and for both subclass teachers a control that distils only their class logits;
- ``assistant`` and ``takd``: a mid-sized assistant distilled from the teacher, then the student from it.

Two named pairs: ``offline`` (MobileNetV2 → MobileNetV1-0.5 assistant → MobileNetV1-0.25 student,
from the converted weights of ``$KDCOURSE_WEIGHTS``) and ``seeds`` (the source reports' ResNet50V2 →
MobileNetV2, with a ResNetV2-18 assistant, from timm's releases; needs the network or a filled cache).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor, nn

from kdcourse import data as kd_data
from kdcourse import hardware, paths
from kdcourse.backbones import Backbone, backbone
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.kd.method import CrossEntropy
from kdcourse.kd.subclass import SubclassKD, class_logits_from_subclasses, subclass_auxiliary_loss
from kdcourse.metrics import roc_auc
from kdcourse.stats import Effect, bootstrap_auc_effect, paired_effect
from kdcourse.studies.common import check_seeds, config_key, with_overrides
from kdcourse.train import FitResult, fit
from kdcourse.transfer import (
    ALL_VIEWS, Trained, TwoPhaseRunner, TwoPhaseSettings, ViewBatches, apply_in_batches, role_views,
)

__all__ = [
    "PAIRS", "ROLES", "ARM_LABELS", "MhistConfig", "PROFILES", "config_for", "vote_subclasses",
    "load_backbones", "MhistOutcome", "run_study", "subclass_head",
    "arm_summary", "COMPARISONS", "effect_table", "phase_effect",
]

# (teacher, assistant, student) names for :func:`kdcourse.backbones.backbone`
PAIRS: dict[str, tuple[str, str, str]] = {
    "offline": ("mobilenetv2_100.tflite_in1k", "mobilenetv1_050.tflite_in1k", "mobilenetv1_025.tflite_in1k"),
    "seeds": ("resnetv2_50.a1h_in1k", "resnetv2_18.ra4_e3600_r224_in1k", "mobilenetv2_100.ra_in1k"),
}
ROLES = ("teacher", "assistant", "student")
SUBCLASSES_PER_CLASS = 2
ARM_LABELS = {
    "teacher": "teacher, pretrained", "teacher_scratch": "teacher, from scratch",
    "assistant": "assistant, distilled from the teacher",
    "student": "student, pretrained, labels only", "student_scratch": "student, from scratch",
    "kd": "student, KD", "known_skd": "student, known-subclass KD",
    "known_control": "student, KD from the known-subclass teacher's class logits",
    "learned_skd": "student, learned-subclass KD",
    "learned_control": "student, KD from the learned-subclass teacher's class logits",
    "takd": "student, KD through the assistant",
    "teacher_known": "teacher + head on known subclasses", "teacher_learned": "teacher + head on learned subclasses",
}


@dataclass(frozen=True)
class MhistConfig:
    """Settings shared by every arm; sizes in pixels, learning rates for AdamW."""

    pair: str = "offline"
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 160  # images are resized from 224 px once, when decoded
    limit: int | None = None  # at most this many images per split (stratified), None: all
    split_reduction: int = 16  # fine-tuning unfreezes the stages after this reduction (the last one)
    batch_size: int = 64
    head_epochs: int = 30
    head_lr: float = 1e-3
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4
    temperatures: tuple[float, ...] = (1.0, 4.0, 8.0)
    alphas: tuple[float, ...] = (0.3, 0.6, 0.9)
    aux_weight: float = 1.0  # learned subclasses: weight of the auxiliary loss
    aux_temperature: float = 1.0
    pretrained: bool = True  # False only in smoke runs without weight files (random weights, said so)
    data: str = "mhist"  # "mhist", or "generated" for a smoke run without MHIST (said so)
    mixed_precision: bool = True

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder."""
        return config_key(self)

    def names(self) -> dict[str, str]:
        """Backbone name of each role (teacher, assistant, student) of ``pair``."""
        return dict(zip(ROLES, PAIRS[self.pair], strict=True))


PROFILES: dict[str, MhistConfig] = {
    "smoke": MhistConfig(seeds=(0, 1), size=64, limit=24, batch_size=16, head_epochs=2, finetune_epochs=1,
                         temperatures=(4.0,), alphas=(0.5,)),
    "full": MhistConfig(),
}


def config_for(profile: str, **overrides: object) -> MhistConfig:
    """The configuration of ``profile`` with ``overrides`` applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


def _check(config: MhistConfig) -> None:
    """Raise ValueError for settings the study cannot run."""
    if config.pair not in PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAIRS)}, got {config.pair!r}")
    check_seeds(config.seeds)
    for name in ("size", "batch_size", "head_epochs", "finetune_epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.size < 32:
        raise ValueError(f"size must be at least 32 px (the networks downsample by 32), got {config.size}")
    for temperature in (*config.temperatures, config.aux_temperature):
        check_temperature(temperature)
    for alpha in config.alphas:
        check_alpha(alpha)
    if not config.temperatures or not config.alphas:
        raise ValueError("the distillation grid needs at least one temperature and one alpha")
    if config.aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got {config.aux_weight}")
    if config.data not in ("mhist", "generated"):
        raise ValueError(f"data must be 'mhist' or 'generated', got {config.data!r}")


def vote_subclasses(labels: Tensor, votes: Tensor) -> Tensor:
    """Known subclasses from the pathologists' SSA votes (of 7): ``(N,)`` in 0–3, two per class.

    0: clear HP (0–1 votes for SSA), 1: borderline HP (2–3), 2: borderline SSA (4–5), 3: clear SSA (6–7);
    class ``c`` owns subclasses ``2c`` and ``2c + 1`` (the layout of
    :func:`kdcourse.kd.subclass.class_logits_from_subclasses`).
    """
    if labels.shape != votes.shape or not bool(((votes >= 0) & (votes <= 7)).all()):
        raise ValueError("labels and votes must have the same shape, with votes in 0–7")
    if bool((labels != (votes >= 4).long()).any()):
        raise ValueError("a majority label disagrees with its votes (SSA needs at least 4 of 7)")
    return torch.where(labels == 0, (votes >= 2).long(), 2 + (votes >= 6).long())


def load_backbones(config: MhistConfig) -> dict[str, Backbone]:
    """The three networks of ``config.pair`` with two-way heads (pretrained unless ``config.pretrained``
    is false).

    Random weights (``config.pretrained`` false, smoke runs only) are drawn under a fixed seed, so that
    every call gives the same networks and a resumed run finds the features it was trained on.
    Raises :class:`kdcourse.backbones.MissingWeightsError` when pretrained weights are not available."""
    weights = "imagenet" if config.pretrained else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return {role: backbone(name, 2, weights=weights) for role, name in config.names().items()}


@dataclass
class MhistOutcome:
    """What the study measured.

    ``runs``: one row per (seed, arm): ``role``, ``model``, ``val_auc``, ``test_auc``,
    ``test_auc_head`` (after the feature-extraction phase alone; NaN where there is none),
    ``balanced_accuracy`` (test, threshold at probability 0.5), ``best_epoch``, ``train_seconds``.
    ``grid``: one row per (seed, T, α) of the distillation grid with ``val_auc`` and ``test_auc``;
    ``chosen``: the (T, α) of the best mean validation AUC. ``scores``: per arm and seed the test
    probability of SSA of every test image; ``labels``: the test labels. ``history``: validation
    AUC per epoch of each network of the first seed. ``cache_seconds``: computing the cached views.
    """

    config: MhistConfig
    runs: pd.DataFrame
    grid: pd.DataFrame
    chosen: dict[str, float]
    scores: dict[str, dict[int, list[float]]]
    labels: list[int]
    history: dict[str, list[float]]
    cache_seconds: float
    data_counts: dict[str, int]
    weights: dict[str, str] = field(default_factory=dict)


def _class_logits(outputs: Tensor) -> Tensor:
    """Class logits ``(N, 2)`` from subclass logits ``(N, 4)``."""
    return class_logits_from_subclasses(outputs, SUBCLASSES_PER_CLASS)


def _learned_subclass_loss(outputs: Tensor, targets: Tensor, *_: Tensor, aux_weight: float,
                           aux_temperature: float) -> Tensor:
    """A learned-subclass head's objective: class cross-entropy plus the weighted auxiliary loss."""
    hard = F.cross_entropy(_class_logits(outputs), targets)
    return hard + aux_weight * subclass_auxiliary_loss(outputs, aux_temperature)


def _fine_tuned_features(runner: TwoPhaseRunner, teacher: Trained) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled features of the fine-tuned teacher: of every training view ``(V, N, D)``, of validation
    and of test ``(N, D)``."""
    views, top = runner.views["teacher"], teacher.top.eval()

    def pooled(maps: Tensor) -> Tensor:
        return apply_in_batches(lambda z: top(z, pre_logits=True), maps, batch_size=256, device=runner.device,
                                amp_dtype=runner.amp)

    return torch.stack([pooled(v) for v in views.train]), pooled(views.val), pooled(views.test)


def subclass_head(runner: TwoPhaseRunner, config: MhistConfig, teacher: Trained, seed: int,
                  learned: bool) -> tuple[FitResult, Tensor, Tensor]:
    """A 2 × 2 subclass head on the fine-tuned teacher's pooled features (every view): known subclasses
    from the votes (cross-entropy), or learned ones (class cross-entropy + auxiliary loss).

    Returns its fit, the subclass logits of every training view ``(V, N, 4)`` and of the test set ``(N, 4)``."""
    data = runner.dataset
    train, val, test = _fine_tuned_features(runner, teacher)
    torch.manual_seed(seed)
    head = nn.Linear(train.shape[-1], 2 * SUBCLASSES_PER_CLASS)
    if learned:
        loss, targets = functools.partial(_learned_subclass_loss, aux_weight=config.aux_weight,
                                          aux_temperature=config.aux_temperature), data.train.y
    else:
        loss, targets = CrossEntropy(), vote_subclasses(data.train.y, data.train.extras["votes"])
    kind = "learned" if learned else "known"
    result = fit(head, ViewBatches(train, targets, batch_size=config.batch_size, seed=seed), loss,
                 epochs=config.head_epochs, lr=config.head_lr, val_data=(val, data.val.y),
                 val_metric="auc", class_logits=_class_logits, seed=seed, device=runner.device,
                 amp_dtype=runner.amp, checkpoint=runner.folder / f"seed{seed}_teacher_{kind}_head.ckpt",
                 description=f"{kind}-subclass head")
    return result, torch.stack([runner.logits(head, v) for v in train]), runner.logits(head, test)


def _probability(logits: Tensor) -> Tensor:
    """P(SSA) ``(N,)`` from class logits ``(N, 2)``."""
    return torch.softmax(logits.float(), -1)[:, 1]


@dataclass
class _Record:
    """The rows, test scores and validation curves that :func:`run_study` collects."""

    config: MhistConfig
    labels: Tensor  # test labels (N_test,)
    rows: list[dict] = field(default_factory=list)
    scores: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)

    def row(self, seed: int, arm: str, role: str, logits: Tensor, result: FitResult,
            head: Trained | None = None) -> None:
        """One row of ``runs`` for a network with test ``logits`` ``(N, 2)`` and its (last) fit."""
        labels = self.labels
        predicted = (_probability(logits) >= 0.5).long().numpy()
        self.rows.append({
            "seed": seed, "arm": arm, "role": role, "model": self.config.names()[role],
            "val_auc": result.best_val_score, "test_auc": roc_auc(logits, labels),
            "test_auc_head": roc_auc(head.head_test_logits, labels) if head else np.nan,
            "balanced_accuracy": float(balanced_accuracy_score(labels.numpy(), predicted)),
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds + (head.head_fit.train_seconds if head else 0.0),
        })

    def arm(self, seed: int, arm: str, role: str, logits: Tensor, result: FitResult,
            head: Trained | None = None) -> None:
        """A row, the test scores and (first seed) the validation curve of both phases of an arm."""
        self.row(seed, arm, role, logits, result, head)
        self.scores.setdefault(arm, {})[seed] = [round(p, 5) for p in _probability(logits).tolist()]
        if seed == self.config.seeds[0]:
            curve = [h["val_auc"] for h in head.head_fit.history] if head else []
            self.history[arm] = curve + [h["val_auc"] for h in result.history]

    def trained(self, seed: int, arm: str, role: str, trained: Trained) -> None:
        """:meth:`arm` for a network trained in two phases."""
        self.arm(seed, arm, role, trained.test_logits, trained.fit, trained)


def _labels_only_arms(runner: TwoPhaseRunner, record: _Record, seed: int) -> Trained:
    """Teacher and student, pretrained and from scratch, trained on the labels; returns the teacher."""
    trained = {}
    for role in ("teacher", "student"):
        trained[role] = runner.two_phase(role, seed, role, keep_train_logits=role == "teacher")
        record.trained(seed, role, role, trained[role])
        result, logits = runner.scratch(role, seed)
        record.arm(seed, f"{role}_scratch", role, logits, result)
    return trained["teacher"]


def _kd_grid(runner: TwoPhaseRunner, config: MhistConfig, seed: int, teacher: Trained) -> dict[tuple, Trained]:
    """The student distilled from ``teacher`` at every (T, α) of the grid."""
    return {(t, a): runner.two_phase("student", seed, f"kd_T{t:g}_a{a:g}", HintonKD(t, a), soft=teacher.train_logits)
            for t in config.temperatures for a in config.alphas}


def _grid_rows(seed: int, grid: dict[tuple, Trained], labels: Tensor) -> list[dict]:
    """One row per (T, α) with the validation and test AUC of its student."""
    return [{"seed": seed, "temperature": t, "alpha": a, "val_auc": trained.fit.best_val_score,
             "test_auc": roc_auc(trained.test_logits, labels)} for (t, a), trained in grid.items()]


def _subclass_arms(runner: TwoPhaseRunner, config: MhistConfig, record: _Record, seed: int, teacher: Trained,
                   temperature: float, alpha: float) -> None:
    """For known and learned subclasses: the teacher's subclass head, the student distilled from its
    subclass logits, and the control distilled from its class logits alone."""
    for kind in ("known", "learned"):
        head_fit, train_sub, test_sub = subclass_head(runner, config, teacher, seed, learned=kind == "learned")
        record.row(seed, f"teacher_{kind}", "teacher", _class_logits(test_sub), head_fit)
        skd = runner.two_phase("student", seed, f"{kind}_skd", SubclassKD(SUBCLASSES_PER_CLASS, temperature, alpha),
                               soft=train_sub, outputs=2 * SUBCLASSES_PER_CLASS, class_logits=_class_logits)
        skd.test_logits, skd.head_test_logits = _class_logits(skd.test_logits), _class_logits(skd.head_test_logits)
        record.trained(seed, f"{kind}_skd", "student", skd)
        class_soft = _class_logits(train_sub.flatten(0, 1)).view(*train_sub.shape[:2], 2)
        control = runner.two_phase("student", seed, f"{kind}_control", HintonKD(temperature, alpha), soft=class_soft)
        record.trained(seed, f"{kind}_control", "student", control)


def _assistant_arms(runner: TwoPhaseRunner, record: _Record, seed: int, teacher: Trained, temperature: float,
                    alpha: float) -> None:
    """The assistant distilled from the teacher, then the student distilled from the assistant."""
    assistant = runner.two_phase("assistant", seed, "assistant", HintonKD(temperature, alpha),
                                 soft=teacher.train_logits, keep_train_logits=True)
    record.trained(seed, "assistant", "assistant", assistant)
    takd = runner.two_phase("student", seed, "takd", HintonKD(temperature, alpha), soft=assistant.train_logits)
    record.trained(seed, "takd", "student", takd)


def _runner(config: MhistConfig, dataset: kd_data.ImageData, folder: Path, device: torch.device,
            nets: dict[str, Backbone]) -> tuple[TwoPhaseRunner, float]:
    """The two-phase runner on the cached views of ``nets``, and the seconds the views took."""
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    start = time.perf_counter()
    views = {role: role_views(role, net, dataset, config.split_reduction, folder.parent / "cache", device, amp,
                              ALL_VIEWS) for role, net in nets.items()}
    settings = TwoPhaseSettings.from_config(config, config.names(), val_metric="auc")
    return TwoPhaseRunner(settings, dataset, views, folder, device, amp), time.perf_counter() - start


def run_study(config: MhistConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> MhistOutcome:
    """Train and evaluate every arm of the study for every seed (checkpointed: a rerun resumes).

    ``dataset`` comes from :func:`kdcourse.data.load_mhist` at ``config.size`` (with ``config.limit``).
    First the labels-only arms and the distillation grid for every seed; the grid's (T, α) of best mean
    validation AUC then serves the KD arm, subclass distillation and distillation through the assistant."""
    _check(config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    nets = load_backbones(config)  # fails first, and clearly, when pretrained weights are missing
    runner, cache_seconds = _runner(config, dataset, (run_root or paths.runs_dir()) / "mhist" / config.key(),
                                    device, nets)
    record, labels = _Record(config, dataset.test.y), dataset.test.y
    teachers, grids, grid_rows = {}, {}, []
    for seed in config.seeds:
        teachers[seed] = _labels_only_arms(runner, record, seed)
        grids[seed] = _kd_grid(runner, config, seed, teachers[seed])
        grid_rows += _grid_rows(seed, grids[seed], labels)
    grid = pd.DataFrame(grid_rows)
    temperature, alpha = grid.groupby(["temperature", "alpha"])["val_auc"].mean().idxmax()
    for seed in config.seeds:
        record.trained(seed, "kd", "student", grids[seed][(temperature, alpha)])
        _subclass_arms(runner, config, record, seed, teachers[seed], temperature, alpha)
        _assistant_arms(runner, record, seed, teachers[seed], temperature, alpha)
    counts = {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}
    chosen = {"temperature": float(temperature), "alpha": float(alpha)}
    return MhistOutcome(config, pd.DataFrame(record.rows), grid, chosen, record.scores, labels.tolist(),
                        record.history, cache_seconds, counts, {role: net.weights for role, net in nets.items()})


def arm_summary(runs: pd.DataFrame, columns: tuple[str, ...] = ("test_auc", "test_auc_head", "balanced_accuracy",
                                                                 "val_auc")) -> pd.DataFrame:
    """Mean and std over seeds of ``columns`` per arm, in the order the arms first appear."""
    order = list(dict.fromkeys(runs["arm"]))
    stats = runs.groupby("arm")[list(columns)].agg(["mean", "std"])
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return stats.loc[order]


# the comparisons the chapter judges: (arm, baseline)
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("teacher", "teacher_scratch"), ("student", "student_scratch"), ("kd", "student"),
    ("known_skd", "kd"), ("known_skd", "known_control"), ("learned_skd", "kd"), ("learned_skd", "learned_control"),
    ("takd", "kd"),
)


def _by_seed(runs: pd.DataFrame, arm: str, column: str = "test_auc") -> pd.Series:
    return runs[runs.arm == arm].set_index("seed")[column]


def effect_table(runs: pd.DataFrame, scores: dict, labels: list[int],
                 comparisons: tuple[tuple[str, str], ...] = COMPARISONS) -> pd.DataFrame:
    """One row per comparison ``(arm, baseline)``: the test-AUC difference in points, paired over seeds
    (``seeds …`` columns) and by a paired bootstrap over test images of the seed-averaged AUC difference
    (``images …`` columns), each with its 95 % interval and verdict (:mod:`kdcourse.stats`)."""
    # JSON keys are text
    scores = {arm: {int(seed): values for seed, values in by_seed.items()} for arm, by_seed in scores.items()}
    rows = []
    for arm, baseline in comparisons:
        row: dict = {"arm": arm, "baseline": baseline}
        a, b = _by_seed(runs, arm), _by_seed(runs, baseline)
        paired = len(a.index.intersection(b.index)) > 1
        effects: dict[str, Effect | None] = {"seeds": paired_effect(a, b) if paired else None}
        seeds = [seed for seed in scores[arm] if seed in scores[baseline]]
        effects["images"] = bootstrap_auc_effect([scores[arm][s] for s in seeds], [scores[baseline][s] for s in seeds],
                                                 labels)
        for over, effect in effects.items():
            for name in ("mean", "std", "low", "high", "verdict"):
                row[f"{over} {name}"] = getattr(effect, name) if effect is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def phase_effect(runs: pd.DataFrame, arm: str) -> Effect:
    """What fine-tuning adds to feature extraction for ``arm``: test AUC after both phases minus after the
    head phase alone, paired over seeds, in AUC points."""
    return paired_effect(_by_seed(runs, arm), _by_seed(runs, arm, "test_auc_head"))
