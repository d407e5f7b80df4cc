"""Transfer learning and distillation on MHIST (colorectal polyps: hyperplastic HP vs sessile serrated SSA).

Every network is an ImageNet backbone with a new two-way head (four ways for subclass students),
trained with the usual two phases:

1. *feature extraction*: the backbone frozen, only the new head is trained, on pooled features of
   the backbone computed once (:mod:`kdcourse.transfer`, which runs both phases);
2. *fine-tuning*: the backbone's last stage is unfrozen as well (its earlier stages stay frozen and
   their outputs are cached for all eight views of every training image) at a lower learning rate.

Before the study, :func:`compare_sizes` chooses the resolution on validation: the head phase of every
network on pooled features of the unaugmented images at each candidate size.

A network trained *from scratch* has no frozen part: all its layers train from random weights for as
many epochs as both pretrained phases together, at the head's learning rate, on the same augmented
batches. The best epoch of every phase is selected on the validation AUC (a split of the official
training partition); the test partition is only ever evaluated.

Arms, all on the same seeds, splits and budgets (every student arm starts from the same student
head initialisation of its seed, and all see the same batches):

- ``member:<network>``: each member of the ensemble, pretrained, on labels; ``teacher`` is the member
  of best mean validation AUC (the single teacher), ``ensemble`` the members' logits averaged
  (:mod:`kdcourse.kd.ensemble`);
- ``student`` / ``student_scratch``: the student pretrained against from scratch;
- ``kd`` and ``kd_ensemble``: the pretrained student distilled from the single teacher and from the
  ensemble, each with its (T, α) chosen on validation over a grid;
- ``known_skd``: subclass distillation with *known* subclasses read from the annotators' votes (a
  head of the single teacher over 2 × 2 subclasses: clear and borderline HP, borderline and clear SSA);
- ``learned_skd``: subclass distillation with subclasses the teacher *learns* (Müller et al.'s
  auxiliary loss), and for both subclass teachers a control that distils only their class logits;
- ``assistant`` and ``takd``: a mid-sized assistant distilled from the single teacher, then the
  student from it.

Two named teams: ``offline`` (an ensemble of MobileNetV2, MobileNetV1-0.75 and MobileNetV1-0.5, the
last also the assistant, and the student MobileNetV1-0.25, from the converted weights of
``$KDCOURSE_WEIGHTS``) and ``seeds`` (the source reports' ResNet50V2 teacher with a ResNetV2-18, the
assistant, and their MobileNetV2 student, from timm's releases; needs the network or a filled cache).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
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
from kdcourse.backbones import Backbone, backbone, pooled_head, reset_head
from kdcourse.kd.ensemble import average_logits
from kdcourse.kd.hinton import HintonKD, check_alpha, check_temperature
from kdcourse.kd.method import CrossEntropy
from kdcourse.kd.subclass import SubclassKD, class_logits_from_subclasses, subclass_auxiliary_loss
from kdcourse.metrics import roc_auc
from kdcourse.stats import Effect, bootstrap_auc_effect, joint_verdict, paired_effect
from kdcourse.studies.common import check_seeds, config_key, with_overrides
from kdcourse.train import FitResult, fit
from kdcourse.transfer import (
    ALL_VIEWS, Trained, TwoPhaseRunner, TwoPhaseSettings, ViewBatches, apply_in_batches, linear_probe, role_views,
)

__all__ = [
    "Team", "TEAMS", "SHORT_NAMES", "ARM_LABELS", "DISTILLED_ARMS", "MhistConfig", "PROFILES", "config_for",
    "vote_subclasses", "load_backbones", "compare_sizes", "chosen_size", "head_diagnosis", "MhistOutcome", "run_study",
    "subclass_head", "arm_label", "arm_summary", "COMPARISONS", "effect_table", "phase_effect",
]


@dataclass(frozen=True)
class Team:
    """The networks of a study (names for :func:`kdcourse.backbones.backbone`): the ``members`` of the
    ensemble teacher, of which the best on validation is also the single teacher; the ``assistant`` of
    distillation through an assistant (it may be a member: it is then trained again, distilled); the ``student``."""

    members: tuple[str, ...]
    assistant: str
    student: str

    def networks(self) -> tuple[str, ...]:
        """Every network of the team once, members first."""
        return tuple(dict.fromkeys((*self.members, self.assistant, self.student)))


TEAMS: dict[str, Team] = {
    "offline": Team(("mobilenetv2_100.tflite_in1k", "mobilenetv1_075.tflite_in1k", "mobilenetv1_050.tflite_in1k"),
                    "mobilenetv1_050.tflite_in1k", "mobilenetv1_025.tflite_in1k"),
    "seeds": Team(("resnetv2_50.a1h_in1k", "resnetv2_18.ra4_e3600_r224_in1k"), "resnetv2_18.ra4_e3600_r224_in1k",
                  "mobilenetv2_100.ra_in1k"),
}
SHORT_NAMES = {
    "mobilenetv2_100.tflite_in1k": "MobileNetV2", "mobilenetv1_075.tflite_in1k": "MobileNetV1-0.75",
    "mobilenetv1_050.tflite_in1k": "MobileNetV1-0.5", "mobilenetv1_025.tflite_in1k": "MobileNetV1-0.25",
    "resnetv2_50.a1h_in1k": "ResNet50V2", "resnetv2_18.ra4_e3600_r224_in1k": "ResNetV2-18",
    "mobilenetv2_100.ra_in1k": "MobileNetV2",
}
SUBCLASSES_PER_CLASS = 2
ARM_LABELS = {
    "teacher": "single teacher (best member on validation)", "ensemble": "ensemble teacher (members' mean logits)",
    "assistant": "assistant, distilled from the single teacher",
    "student": "student, pretrained, labels only", "student_scratch": "student, from scratch",
    "kd": "student, KD from the single teacher", "kd_ensemble": "student, KD from the ensemble",
    "known_skd": "student, known-subclass KD",
    "known_control": "student, KD from the known-subclass teacher's class logits",
    "learned_skd": "student, learned-subclass KD",
    "learned_control": "student, KD from the learned-subclass teacher's class logits",
    "takd": "student, KD through the assistant",
    "teacher_known": "single teacher + head on known subclasses",
    "teacher_learned": "single teacher + head on learned subclasses",
}
DISTILLED_ARMS = ("kd", "kd_ensemble", "known_skd", "learned_skd", "takd")  # the candidates for "best distilled student"
MEMBER = "member:"  # prefix of a member's arm, followed by its network name


def arm_label(arm: str) -> str:
    """The arm in words (a member's arm by its network's short name)."""
    if arm.startswith(MEMBER):
        name = arm[len(MEMBER):]
        return f"ensemble member {SHORT_NAMES.get(name, name)}, labels only"
    return ARM_LABELS.get(arm, arm)


@dataclass(frozen=True)
class MhistConfig:
    """Settings shared by every arm; sizes in pixels, learning rates for AdamW."""

    team: str = "offline"
    seeds: tuple[int, ...] = (0, 1, 2)
    sizes: tuple[int, ...] = (160, 224)  # candidate resolutions, compared on validation by :func:`compare_sizes`
    size: int = 160  # the resolution trained at; images are resized from 224 px once, when decoded
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

    @property
    def networks(self) -> Team:
        """The team of networks this configuration names."""
        return TEAMS[self.team]


PROFILES: dict[str, MhistConfig] = {
    "smoke": MhistConfig(seeds=(0, 1), sizes=(64, 96), size=64, limit=24, batch_size=16, head_epochs=2,
                         finetune_epochs=1, temperatures=(4.0,), alphas=(0.5,)),
    "full": MhistConfig(),
}


def config_for(profile: str, **overrides: object) -> MhistConfig:
    """The configuration of ``profile`` with ``overrides`` applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


def _check(config: MhistConfig) -> None:
    """Raise ValueError for settings the study cannot run."""
    if config.team not in TEAMS:
        raise ValueError(f"team must be one of {sorted(TEAMS)}, got {config.team!r}")
    check_seeds(config.seeds)
    for name in ("size", "batch_size", "head_epochs", "finetune_epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if min(config.size, *config.sizes) < 32:
        raise ValueError(f"sizes must be at least 32 px (the networks downsample by 32), got {config.size}, {config.sizes}")
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
    """Every network of ``config.team`` by name, with a two-way head (pretrained unless
    ``config.pretrained`` is false).

    Random weights (``config.pretrained`` false, smoke runs only) are drawn under a fixed seed, so that
    every call gives the same networks and a resumed run finds the features it was trained on.
    Raises :class:`kdcourse.backbones.MissingWeightsError` when pretrained weights are not available."""
    weights = "imagenet" if config.pretrained else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return {name: backbone(name, 2, weights=weights) for name in config.networks.networks()}


def _runner(config: MhistConfig, dataset: kd_data.ImageData, folder: Path, device: torch.device,
            nets: dict[str, Backbone], views: tuple[int, ...] = ALL_VIEWS) -> tuple[TwoPhaseRunner, float]:
    """The two-phase runner on the cached ``views`` of ``nets`` (roles named by network), and the seconds
    the views took."""
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    start = time.perf_counter()
    cached = {name: role_views(name.replace(".", "_"), net, dataset, config.split_reduction, folder.parent / "cache",
                               device, amp, views) for name, net in nets.items()}
    settings = TwoPhaseSettings.from_config(config, {name: name for name in nets}, val_metric="auc")
    return TwoPhaseRunner(settings, dataset, cached, folder, device, amp), time.perf_counter() - start


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def compare_sizes(config: MhistConfig, load: Callable[[int], kd_data.ImageData], *, run_root: Path | None = None,
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """The head phase of every network at every size of ``config.sizes``, for every seed, on pooled
    features of the unaugmented training images: one row per (size, network, seed) with ``val_auc`` and
    ``test_auc``. ``load(size)`` returns the data set at ``size`` px. :func:`chosen_size` reads the choice."""
    _check(config)
    nets, rows = load_backbones(config), []
    for size in config.sizes:
        sized = dataclasses.replace(config, size=size)
        folder = (run_root or paths.runs_dir()) / "mhist" / sized.key() / "sizes"
        runner, _ = _runner(sized, load(size), folder, _device(device), nets, views=(0,))
        for name in nets:
            for seed in config.seeds:
                result, logits = runner.head_only(name, seed, f"{name}_size{size}")
                rows.append({"size": size, "network": name, "seed": seed, "val_auc": result.best_val_score,
                             "test_auc": roc_auc(logits, runner.dataset.test.y)})
    return pd.DataFrame(rows)


def head_diagnosis(config: MhistConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None,
                   device: str | torch.device | None = None) -> pd.DataFrame:
    """Why a new head must start small, at ``config.size`` on pooled features of the unaugmented images
    (the features :func:`compare_sizes` cached): for every network and seed, the head phase started as
    timm draws a MobileNet classifier (uniform in ±1/√classes) and as the study starts it (fan-in scale),
    and per network a linear probe (:func:`kdcourse.transfer.linear_probe`). One row per (network, start,
    seed) with ``start`` (``"timm"``, ``"fan-in"``, ``"probe"``), ``val_auc``, ``test_auc``, ``logit_std``
    (spread of the untrained head's logits on the training features) and ``curve`` (validation AUC per epoch)."""
    _check(config)
    nets = load_backbones(config)
    folder = (run_root or paths.runs_dir()) / "mhist" / config.key() / "sizes"
    runner, _ = _runner(config, dataset, folder, _device(device), nets, views=(0,))
    rows = []
    for name in nets:
        views = runner.views[name]
        (val, test), c = linear_probe(views.pooled_train[0], dataset.train.y, views.pooled_val, views.pooled_test)
        rows.append({"network": name, "start": "probe", "seed": np.nan, "val_auc": roc_auc(torch.from_numpy(val), dataset.val.y),
                     "test_auc": roc_auc(torch.from_numpy(test), dataset.test.y), "logit_std": np.nan, "curve": [], "C": c})
        for seed in config.seeds:
            for start in ("timm", "fan-in"):
                rows.append(_head_from(runner, name, seed, start))
    return pd.DataFrame(rows)


def _head_from(runner: TwoPhaseRunner, name: str, seed: int, start: str) -> dict:
    """The head phase of network ``name`` started as ``start`` (``"timm"`` or ``"fan-in"``): one row of
    :func:`head_diagnosis`."""
    model, _ = runner.fresh(name, seed)
    head = pooled_head(model)
    torch.manual_seed(seed)
    if start == "timm":
        bound = 1 / math.sqrt(head.weight.shape[0])  # Google's range, 1/√(number of classes)
        with torch.no_grad():
            head.weight.uniform_(-bound, bound)
            head.bias.zero_()
    else:
        reset_head(model)  # as backbone() starts a new head on pretrained weights (random weights too, here)
    views = runner.views[name]
    spread = float(runner.logits(head, views.pooled_train[0]).std())
    result, logits = runner.head_phase(head, name, seed, f"{name}_{start}_start")
    return {"network": name, "start": start, "seed": seed, "val_auc": result.best_val_score,
            "test_auc": roc_auc(logits, runner.dataset.test.y), "logit_std": spread,
            "curve": [h["val_auc"] for h in result.history], "C": np.nan}


def chosen_size(sizes: pd.DataFrame) -> int:
    """The size of best validation AUC, averaged over networks and seeds (never the test AUC)."""
    return int(sizes.groupby("size").val_auc.mean().idxmax())


@dataclass
class MhistOutcome:
    """What the study measured.

    ``runs``: one row per (seed, arm): ``role``, ``model``, ``val_auc``, ``test_auc``,
    ``test_auc_head`` (after the feature-extraction phase alone; NaN where there is none),
    ``balanced_accuracy`` (test, threshold at probability 0.5), ``best_epoch``, ``train_seconds``.
    ``grid``: one row per (teacher, seed, T, α) of the distillation grids (``teacher``: ``"teacher"`` or
    ``"ensemble"``) with ``val_auc`` and ``test_auc``; ``chosen``: per teacher the (T, α) of the best mean
    validation AUC. ``teacher_network``: the member chosen as the single teacher. ``scores``: per arm and
    seed the test probability of SSA of every test image; ``labels``: the test labels. ``history``:
    validation AUC per epoch of each network of the first seed. ``cache_seconds``: computing the cached views.
    """

    config: MhistConfig
    runs: pd.DataFrame
    grid: pd.DataFrame
    chosen: dict[str, dict[str, float]]
    teacher_network: str
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


def _fine_tuned_features(runner: TwoPhaseRunner, role: str, teacher: Trained) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled features of the fine-tuned teacher (network ``role``): of every training view ``(V, N, D)``,
    of validation and of test ``(N, D)``."""
    views, top = runner.views[role], teacher.top.eval()

    def pooled(maps: Tensor) -> Tensor:
        return apply_in_batches(lambda z: top(z, pre_logits=True), maps, batch_size=256, device=runner.device,
                                amp_dtype=runner.amp)

    return torch.stack([pooled(v) for v in views.train]), pooled(views.val), pooled(views.test)


def subclass_head(runner: TwoPhaseRunner, config: MhistConfig, role: str, teacher: Trained, seed: int,
                  learned: bool) -> tuple[FitResult, Tensor, Tensor]:
    """A 2 × 2 subclass head on the fine-tuned teacher's pooled features (every view): known subclasses
    from the votes (cross-entropy), or learned ones (class cross-entropy + auxiliary loss).

    Returns its fit, the subclass logits of every training view ``(V, N, 4)`` and of the test set ``(N, 4)``."""
    data = runner.dataset
    train, val, test = _fine_tuned_features(runner, role, teacher)
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

    def row(self, seed: int, arm: str, model: str, logits: Tensor, val_auc: float, best_epoch: float,
            train_seconds: float, head_logits: Tensor | None = None) -> None:
        """One row of ``runs`` for network(s) ``model`` with test ``logits`` ``(N, 2)``, and its test scores."""
        labels = self.labels
        predicted = (_probability(logits) >= 0.5).long().numpy()
        self.rows.append({
            "seed": seed, "arm": arm, "role": _role(arm), "model": model, "val_auc": val_auc,
            "test_auc": roc_auc(logits, labels),
            "test_auc_head": roc_auc(head_logits, labels) if head_logits is not None else np.nan,
            "balanced_accuracy": float(balanced_accuracy_score(labels.numpy(), predicted)),
            "best_epoch": best_epoch, "train_seconds": train_seconds,
        })
        self.scores.setdefault(arm, {})[seed] = [round(p, 5) for p in _probability(logits).tolist()]

    def fitted(self, seed: int, arm: str, model: str, logits: Tensor, result: FitResult) -> None:
        """A row for a network trained in one fit (from scratch, or a head), with its validation curve."""
        self.row(seed, arm, model, logits, result.best_val_score, result.best_epoch, result.train_seconds)
        if seed == self.config.seeds[0]:
            self.history[arm] = [h["val_auc"] for h in result.history]

    def trained(self, seed: int, arm: str, model: str, trained: Trained) -> None:
        """A row, the test scores and (first seed) the validation curve of both phases of a network."""
        self.row(seed, arm, model, trained.test_logits, trained.fit.best_val_score, trained.fit.best_epoch,
                 trained.fit.train_seconds + trained.head_fit.train_seconds, trained.head_test_logits)
        if seed == self.config.seeds[0]:
            self.history[arm] = [h["val_auc"] for h in (*trained.head_fit.history, *trained.fit.history)]


def _role(arm: str) -> str:
    """Which kind of network an arm trains: a teacher, the assistant or the student."""
    if arm.startswith(MEMBER) or arm in ("teacher", "ensemble", "teacher_known", "teacher_learned"):
        return "teacher"
    return "assistant" if arm == "assistant" else "student"


@dataclass
class _Teachers:
    """The trained members of one seed, the single teacher chosen among them and the ensemble's logits."""

    members: dict[str, Trained]
    single: str = ""

    def ensemble(self, field_name: str) -> Tensor:
        """The members' mean of one kind of logits (``train_logits``, ``val_logits`` or ``test_logits``)."""
        return average_logits([getattr(trained, field_name) for trained in self.members.values()])

    def soft(self, teacher: str) -> Tensor:
        """Training logits per view ``(V, N, 2)`` of ``teacher`` (``"teacher"`` or ``"ensemble"``)."""
        return self.ensemble("train_logits") if teacher == "ensemble" else self.members[self.single].train_logits


def _labels_only_arms(runner: TwoPhaseRunner, config: MhistConfig, record: _Record, seed: int) -> _Teachers:
    """Every member and the student on labels, and the student from scratch; returns the members."""
    team, members = config.networks, {}
    for name in team.members:
        members[name] = runner.two_phase(name, seed, name, keep_train_logits=True)
        record.trained(seed, MEMBER + name, name, members[name])
    record.trained(seed, "student", team.student, runner.two_phase(team.student, seed, team.student))
    result, logits = runner.scratch(team.student, seed)
    record.fitted(seed, "student_scratch", team.student, logits, result)
    return _Teachers(members)


def _teacher_arms(record: _Record, config: MhistConfig, seed: int, teachers: _Teachers, labels_val: Tensor) -> None:
    """The rows of the single teacher (a copy of its member's) and of the ensemble."""
    single = teachers.members[teachers.single]
    record.trained(seed, "teacher", teachers.single, single)
    seconds = sum(t.fit.train_seconds + t.head_fit.train_seconds for t in teachers.members.values())
    record.row(seed, "ensemble", "+".join(config.networks.members), teachers.ensemble("test_logits"),
               roc_auc(teachers.ensemble("val_logits"), labels_val), np.nan, seconds,
               average_logits([t.head_test_logits for t in teachers.members.values()]))


def _kd_grid(runner: TwoPhaseRunner, config: MhistConfig, seed: int, teachers: _Teachers,
             teacher: str) -> dict[tuple, Trained]:
    """The student distilled from ``teacher`` (``"teacher"`` or ``"ensemble"``) at every (T, α) of the grid."""
    prefix = "kd" if teacher == "teacher" else "kd_ensemble"
    return {(t, a): runner.two_phase(config.networks.student, seed, f"{prefix}_T{t:g}_a{a:g}", HintonKD(t, a),
                                     soft=teachers.soft(teacher))
            for t in config.temperatures for a in config.alphas}


def _grid_rows(seed: int, teacher: str, grid: dict[tuple, Trained], labels: Tensor) -> list[dict]:
    """One row per (T, α) with the validation and test AUC of its student."""
    return [{"teacher": teacher, "seed": seed, "temperature": t, "alpha": a, "val_auc": trained.fit.best_val_score,
             "test_auc": roc_auc(trained.test_logits, labels)} for (t, a), trained in grid.items()]


def _subclass_arms(runner: TwoPhaseRunner, config: MhistConfig, record: _Record, seed: int, teachers: _Teachers,
                   temperature: float, alpha: float) -> None:
    """For known and learned subclasses: the single teacher's subclass head, the student distilled from its
    subclass logits, and the control distilled from its class logits alone."""
    student, role = config.networks.student, teachers.single
    for kind in ("known", "learned"):
        head_fit, train_sub, test_sub = subclass_head(runner, config, role, teachers.members[role], seed,
                                                      learned=kind == "learned")
        record.fitted(seed, f"teacher_{kind}", role, _class_logits(test_sub), head_fit)
        skd = runner.two_phase(student, seed, f"{kind}_skd", SubclassKD(SUBCLASSES_PER_CLASS, temperature, alpha),
                               soft=train_sub, outputs=2 * SUBCLASSES_PER_CLASS, class_logits=_class_logits)
        skd.test_logits, skd.head_test_logits = _class_logits(skd.test_logits), _class_logits(skd.head_test_logits)
        record.trained(seed, f"{kind}_skd", student, skd)
        class_soft = _class_logits(train_sub.flatten(0, 1)).view(*train_sub.shape[:2], 2)
        control = runner.two_phase(student, seed, f"{kind}_control", HintonKD(temperature, alpha), soft=class_soft)
        record.trained(seed, f"{kind}_control", student, control)


def _assistant_arms(runner: TwoPhaseRunner, config: MhistConfig, record: _Record, seed: int, teachers: _Teachers,
                    temperature: float, alpha: float) -> None:
    """The assistant distilled from the single teacher, then the student distilled from the assistant."""
    team = config.networks
    assistant = runner.two_phase(team.assistant, seed, "assistant", HintonKD(temperature, alpha),
                                 soft=teachers.soft("teacher"), keep_train_logits=True)
    record.trained(seed, "assistant", team.assistant, assistant)
    takd = runner.two_phase(team.student, seed, "takd", HintonKD(temperature, alpha), soft=assistant.train_logits)
    record.trained(seed, "takd", team.student, takd)


def _best_member(record: _Record, config: MhistConfig) -> str:
    """The member of best mean validation AUC over seeds (after both phases)."""
    runs = pd.DataFrame(record.rows)
    members = runs[runs.arm.str.startswith(MEMBER)]
    return str(members.groupby("model").val_auc.mean().reindex(list(config.networks.members)).idxmax())


def run_study(config: MhistConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> MhistOutcome:
    """Train and evaluate every arm of the study for every seed (checkpointed: a rerun resumes).

    ``dataset`` comes from :func:`kdcourse.data.load_mhist` at ``config.size`` (with ``config.limit``).
    First the members, the student and its scratch twin for every seed; the member of best mean validation
    AUC becomes the single teacher; then both distillation grids; each grid's (T, α) of best mean
    validation AUC serves its KD arm, and the single teacher's also subclass distillation and the assistant."""
    _check(config)
    nets = load_backbones(config)  # fails first, and clearly, when pretrained weights are missing
    runner, cache_seconds = _runner(config, dataset, (run_root or paths.runs_dir()) / "mhist" / config.key(),
                                    _device(device), nets)
    record, labels = _Record(config, dataset.test.y), dataset.test.y
    teachers = {seed: _labels_only_arms(runner, config, record, seed) for seed in config.seeds}
    single = _best_member(record, config)
    grids: dict[tuple[int, str], dict[tuple, Trained]] = {}
    grid_rows: list[dict] = []
    for seed in config.seeds:
        teachers[seed].single = single
        _teacher_arms(record, config, seed, teachers[seed], dataset.val.y)
        for teacher in ("teacher", "ensemble"):
            grids[seed, teacher] = _kd_grid(runner, config, seed, teachers[seed], teacher)
            grid_rows += _grid_rows(seed, teacher, grids[seed, teacher], labels)
    grid = pd.DataFrame(grid_rows)
    chosen = {teacher: dict(zip(("temperature", "alpha"), map(float, rows.groupby(["temperature", "alpha"])
                                                              .val_auc.mean().idxmax())))
              for teacher, rows in grid.groupby("teacher", sort=False)}
    for seed in config.seeds:
        for teacher, arm in (("teacher", "kd"), ("ensemble", "kd_ensemble")):
            pick = chosen[teacher]
            record.trained(seed, arm, config.networks.student, grids[seed, teacher][pick["temperature"], pick["alpha"]])
        pick = chosen["teacher"]
        _subclass_arms(runner, config, record, seed, teachers[seed], pick["temperature"], pick["alpha"])
        _assistant_arms(runner, config, record, seed, teachers[seed], pick["temperature"], pick["alpha"])
    counts = {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}
    return MhistOutcome(config, pd.DataFrame(record.rows), grid, chosen, single, record.scores, labels.tolist(),
                        record.history, cache_seconds, counts, {name: net.weights for name, net in nets.items()})


def arm_summary(runs: pd.DataFrame, columns: tuple[str, ...] = ("test_auc", "test_auc_head", "balanced_accuracy",
                                                                 "val_auc")) -> pd.DataFrame:
    """Mean and std over seeds of ``columns`` per arm, in the order the arms first appear."""
    order = list(dict.fromkeys(runs["arm"]))
    stats = runs.groupby("arm")[list(columns)].agg(["mean", "std"])
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return stats.loc[order]


# the comparisons the chapter judges: (arm, baseline)
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("teacher", "student"), ("ensemble", "student"), ("ensemble", "teacher"), ("student", "student_scratch"),
    ("kd", "student"), ("kd_ensemble", "student"), ("kd_ensemble", "kd"),
    ("known_skd", "kd"), ("known_skd", "known_control"), ("learned_skd", "kd"), ("learned_skd", "learned_control"),
    ("takd", "kd"),
)


def _by_seed(runs: pd.DataFrame, arm: str, column: str = "test_auc") -> pd.Series:
    return runs[runs.arm == arm].set_index("seed")[column]


def effect_table(runs: pd.DataFrame, scores: dict, labels: list[int],
                 comparisons: tuple[tuple[str, str], ...] = COMPARISONS) -> pd.DataFrame:
    """One row per comparison ``(arm, baseline)``: the test-AUC difference in points, paired over seeds
    (``seeds …`` columns) and by a paired bootstrap over test images of the seed-averaged AUC difference
    (``images …`` columns), each with its 95 % interval and verdict, and the ``verdict`` of the claim under
    both (:func:`kdcourse.stats.joint_verdict`)."""
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
        judged = [effect for effect in effects.values() if effect is not None]
        row["verdict"] = joint_verdict(*judged)
        rows.append(row)
    return pd.DataFrame(rows)


def phase_effect(runs: pd.DataFrame, arm: str) -> Effect:
    """What fine-tuning adds to feature extraction for ``arm``: test AUC after both phases minus after the
    head phase alone, paired over seeds, in AUC points."""
    return paired_effect(_by_seed(runs, arm), _by_seed(runs, arm, "test_auc_head"))
