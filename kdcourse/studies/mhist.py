"""Transfer learning and distillation on MHIST (colorectal polyps: hyperplastic HP vs sessile serrated SSA).

Every network is an ImageNet backbone with a new two-way head (four ways for subclass students),
trained with the usual two phases:

1. *feature extraction*: the backbone frozen, only the new head is trained, on pooled features of
   the backbone computed once (:mod:`kdcourse.transfer`);
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

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor, nn

from kdcourse import data as kd_data
from kdcourse import checkpoints, hardware, paths
from kdcourse.backbones import Backbone, backbone, pooled_head, set_trainable, split_at, splittable
from kdcourse.stats import Effect, bootstrap_auc_effect, paired_effect
from kdcourse.kd.hinton import check_alpha, check_temperature, distillation_loss
from kdcourse.metrics import roc_auc
from kdcourse.kd.subclass import class_logits_from_subclasses, subclass_auxiliary_loss, subclass_distillation_loss
from kdcourse.train import FitResult, fit, predict_logits
from kdcourse.transfer import VIEWS, ViewBatches, apply_in_batches, dihedral_view, trunk_views
from kdcourse.studies.common import config_key, with_overrides

__all__ = [
    "PAIRS", "MhistConfig", "PROFILES", "config_for", "vote_subclasses", "MhistOutcome", "run_study",
    "load_backbones", "role_views", "Views", "TwoPhaseRunner", "Trained", "arm_summary", "ARM_LABELS", "COMPARISONS", "effect_table", "phase_effect",
]

# (teacher, assistant, student) names for :func:`kdcourse.backbones.backbone`
PAIRS: dict[str, tuple[str, str, str]] = {
    "offline": ("mobilenetv2_100.tflite_in1k", "mobilenetv1_050.tflite_in1k", "mobilenetv1_025.tflite_in1k"),
    "seeds": ("resnetv2_50.a1h_in1k", "resnetv2_18.ra4_e3600_r224_in1k", "mobilenetv2_100.ra_in1k"),
}
ROLES = ("teacher", "assistant", "student")
ALL_VIEWS = tuple(range(VIEWS))  # the 8 symmetries of the square: histology has no preferred orientation
SUBCLASSES_PER_CLASS = 2
ARM_LABELS = {
    "teacher": "teacher, pretrained", "teacher_scratch": "teacher, from scratch",
    "assistant": "assistant, distilled from the teacher",
    "student": "student, pretrained, labels only", "student_scratch": "student, from scratch",
    "kd": "student, KD", "known_skd": "student, known-subclass KD", "known_control": "student, KD from the known-subclass teacher's class logits",
    "learned_skd": "student, learned-subclass KD", "learned_control": "student, KD from the learned-subclass teacher's class logits",
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


PROFILES: dict[str, MhistConfig] = {
    "smoke": MhistConfig(seeds=(0, 1), size=64, limit=24, batch_size=16, head_epochs=2, finetune_epochs=1,
                         temperatures=(4.0,), alphas=(0.5,)),
    "full": MhistConfig(),
}


def config_for(profile: str, **overrides: object) -> MhistConfig:
    """The configuration of ``profile`` with ``overrides`` applied; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


def _check(config: MhistConfig) -> None:
    if config.pair not in PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAIRS)}, got {config.pair!r}")
    if len(config.seeds) < 1 or len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {config.seeds}")
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
    class ``c`` owns subclasses ``2c`` and ``2c + 1`` (the layout of :func:`kdcourse.kd.subclass.class_logits_from_subclasses`).
    """
    if labels.shape != votes.shape or not bool(((votes >= 0) & (votes <= 7)).all()):
        raise ValueError("labels and votes must have the same shape, with votes in 0–7")
    if bool((labels != (votes >= 4).long()).any()):
        raise ValueError("a majority label disagrees with its votes (SSA needs at least 4 of 7)")
    return torch.where(labels == 0, (votes >= 2).long(), 2 + (votes >= 6).long())


def load_backbones(config: MhistConfig, num_classes: dict[str, int] | None = None) -> dict[str, Backbone]:
    """The three networks of ``config.pair`` (pretrained unless ``config.pretrained`` is false).

    Random weights (``config.pretrained`` false, smoke runs only) are drawn under a fixed seed, so that
    every call gives the same networks and a resumed run finds the features it was trained on.
    Raises :class:`kdcourse.backbones.MissingWeightsError` when pretrained weights are not available."""
    weights = "imagenet" if config.pretrained else None
    counts = num_classes or {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return {role: backbone(name, counts.get(role, 2), weights=weights)
                for role, name in zip(ROLES, PAIRS[config.pair], strict=True)}


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


@dataclass
class Views:
    """Cached inputs of one role: trunk maps of the V training views (8 for MHIST) and of validation and
    test, and the pooled features of the pretrained top for the head phase."""

    train: Tensor | None  # (V, N, C', h, w); None for a network without a trunk (pooled features only)
    val: Tensor | None  # (N_val, C', h, w)
    test: Tensor | None
    pooled_train: Tensor  # (V, N, D)
    pooled_val: Tensor
    pooled_test: Tensor


def _cache_key(config: MhistConfig, name: str, views: tuple[int, ...]) -> str:
    fields = {"model": name, "size": config.size, "limit": config.limit, "views": list(views),
              "reduction": config.split_reduction, "pretrained": config.pretrained, "data": config.data}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def role_views(role: str, net: Backbone, dataset: kd_data.MhistData, config: MhistConfig, folder: Path,
               device: torch.device, amp: torch.dtype | None, views: tuple[int, ...] = ALL_VIEWS) -> Views:
    """The cached views of ``role``'s pretrained trunk and top (computed once, then read from ``folder``).

    ``dataset`` is any data set with ``train``, ``val`` and ``test`` splits of uint8 images ``x`` at
    ``config.size`` (MHIST, CIFAR-10); ``views`` are the dihedral view codes of its augmentation."""
    path = folder.parent / "cache" / f"{role}_{_cache_key(config, net.name, views)}.pt"  # shared by configurations
    # the file is reused only for the same weights and images
    key = {"weights": checkpoints.module_fingerprint(net.model),
           "images": checkpoints.tensor_fingerprint(dataset.train.x, dataset.val.x, dataset.test.x)}
    return Views(**checkpoints.cached(path, key, lambda: asdict(_compute_views(net, dataset, config, device, amp, views))))


def _compute_views(net: Backbone, dataset: kd_data.MhistData, config: MhistConfig, device: torch.device,
                   amp: torch.dtype | None, views: tuple[int, ...] = ALL_VIEWS) -> Views:
    """The trunk outputs of the training views and of validation and test, and their pooled features.

    A network that :func:`kdcourse.backbones.split_at` cannot cut (a ViT) gets its pooled features only
    (its trunk fields are None): it can be trained as a head on them, or fine-tuned whole."""
    layout = hardware.CONV_MEMORY_FORMAT
    if not splittable(net.model):
        return _pooled_views(net, dataset, device, amp, views)
    trunk, top = split_at(net.model, config.split_reduction)
    trunk.to(device)
    top.to(device).eval()
    kwargs = {"device": device, "amp_dtype": amp, "memory_format": layout}
    train = trunk_views(trunk, dataset.train.x, net.mean, net.std, views=views, **kwargs)
    val = trunk_views(trunk, dataset.val.x, net.mean, net.std, views=1, **kwargs)[0]
    test = trunk_views(trunk, dataset.test.x, net.mean, net.std, views=1, **kwargs)[0]

    def pooled(maps: Tensor) -> Tensor:
        return apply_in_batches(lambda z: top(z, pre_logits=True), maps, batch_size=256, device=device, amp_dtype=amp)

    return Views(train, val, test, torch.stack([pooled(v) for v in train]), pooled(val), pooled(test))


def _pooled_views(net: Backbone, dataset: kd_data.MhistData, device: torch.device, amp: torch.dtype | None,
                  views: tuple[int, ...]) -> Views:
    model = net.model.to(device).eval()

    def pooled(images: Tensor, code: int = 0) -> Tensor:
        return apply_in_batches(lambda x: model.forward_head(model.forward_features(x), pre_logits=True),
                                dihedral_view(images, code), batch_size=64, device=device, amp_dtype=amp,
                                prepare=lambda b: kd_data.normalise_images(b, net.mean, net.std))

    return Views(None, None, None, torch.stack([pooled(dataset.train.x, code) for code in views]),
                 pooled(dataset.val.x), pooled(dataset.test.x))


LossFn = Callable[..., Tensor]


def _labels_loss(outputs: Tensor, targets: Tensor, *_: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets)


def _kd_loss(temperature: float, alpha: float) -> LossFn:
    return lambda outputs, targets, teacher: distillation_loss(outputs, teacher, targets, temperature, alpha)


def _subclass_kd_loss(temperature: float, alpha: float) -> LossFn:
    return lambda outputs, targets, teacher: subclass_distillation_loss(
        outputs, teacher, targets, SUBCLASSES_PER_CLASS, temperature, alpha)


def _class_logits(outputs: Tensor) -> Tensor:
    return class_logits_from_subclasses(outputs, SUBCLASSES_PER_CLASS)


@dataclass
class Trained:
    """A network trained in two phases: its top (fine-tuned), the fits, and its outputs."""

    top: nn.Module
    head_fit: FitResult
    fit: FitResult
    test_logits: Tensor  # (N_test, K)
    head_test_logits: Tensor | None
    train_logits: Tensor | None = None  # (8, N, K) on every cached training view, for distilling from it


class TwoPhaseRunner:
    """Trains networks on the cached views, with checkpoints under ``folder``.

    ``names`` maps each role to its backbone name (default: ``config.pair``'s), ``val_metric`` selects
    every phase's best epoch (``fit``'s names; AUC for MHIST); ``config`` is an
    :class:`MhistConfig` or any configuration with its training fields (the TL+KD study's)."""

    def __init__(self, config: MhistConfig, dataset: kd_data.MhistData, views: dict[str, Views],
                 folder: Path, device: torch.device, amp: torch.dtype | None, names: dict[str, str] | None = None,
                 val_metric: str = "auc") -> None:
        self.config, self.dataset, self.views, self.folder, self.device, self.amp = config, dataset, views, folder, device, amp
        self.names = names or dict(zip(ROLES, PAIRS[config.pair], strict=True))
        self.val_metric = val_metric

    def fresh(self, role: str, seed: int, outputs: int = 2) -> tuple[nn.Module, nn.Module]:
        """A new network of ``role`` and its top, its trunk frozen; the head is initialised from ``seed``."""
        torch.manual_seed(seed)  # the new head's initialisation: the same for every arm of a seed and role
        config = self.config
        net = backbone(self.names[role], outputs, weights="imagenet" if config.pretrained else None)
        trunk, top = split_at(net.model, config.split_reduction)
        set_trainable(trunk, False)
        return net.model, top

    def two_phase(self, role: str, seed: int, name: str, loss_fn: LossFn = _labels_loss,
                  soft: Tensor | None = None, outputs: int = 2, targets: Tensor | None = None,
                  keep_train_logits: bool = False, class_logits: Callable[[Tensor], Tensor] | None = None) -> Trained:
        """Head on pooled features, then the top on trunk maps; ``soft`` ``(8, N, K)`` are teacher
        logits per training view (extras of ``loss_fn``), ``targets`` replace the class labels in training."""
        config, views = self.config, self.views[role]
        model, top = self.fresh(role, seed, outputs)
        head = pooled_head(model)
        y = self.dataset.train.y if targets is None else targets
        extras = () if soft is None else (soft,)
        common = {"seed": seed, "device": self.device, "amp_dtype": self.amp, "val_metric": self.val_metric,
                  "class_logits": class_logits}
        head_fit = fit(head, ViewBatches(views.pooled_train, y, *extras, batch_size=config.batch_size, seed=seed),
                       loss_fn, epochs=config.head_epochs, lr=config.head_lr, val_data=(views.pooled_val, self.dataset.val.y),
                       checkpoint=self.folder / f"seed{seed}_{name}_head.ckpt", description=f"{name} head", **common)
        head_test = predict_logits(head, views.pooled_test, device=self.device, amp_dtype=self.amp)
        top_fit = fit(top, ViewBatches(views.train, y, *extras, batch_size=config.batch_size, seed=seed), loss_fn,
                      epochs=config.finetune_epochs, lr=config.finetune_lr, schedule="cosine",
                      val_data=(views.val, self.dataset.val.y), checkpoint=self.folder / f"seed{seed}_{name}.ckpt",
                      description=name, **common)
        test = self._logits(top, views.test)
        train = torch.stack([self._logits(top, v) for v in views.train]) if keep_train_logits else None
        return Trained(top, head_fit, top_fit, test, head_test, train)

    def _logits(self, module: nn.Module, inputs: Tensor) -> Tensor:
        return predict_logits(module, inputs, batch_size=256, device=self.device, amp_dtype=self.amp)

    def scratch(self, role: str, seed: int) -> tuple[FitResult, Tensor]:
        """All layers from random weights (trainable BatchNorm), ``finetune_epochs`` at ``head_lr`` on augmented images."""
        config, data = self.config, self.dataset
        torch.manual_seed(seed)
        net = backbone(self.names[role], 2, weights=None)
        model = net.model.to(memory_format=hardware.CONV_MEMORY_FORMAT)
        train = kd_data.TensorBatches(data.train.x, data.train.y, batch_size=config.batch_size, seed=seed,
                                      transform=kd_data.ImageTransform(net.mean, net.std, device=self.device))
        plain = kd_data.ImageTransform(net.mean, net.std, augment=False, device=self.device)

        def batches(x: Tensor) -> kd_data.TensorBatches:
            return kd_data.TensorBatches(x, batch_size=config.batch_size, shuffle=False, transform=plain)

        result = fit(model, train, epochs=config.finetune_epochs, lr=config.head_lr, schedule="cosine", seed=seed,
                     val_data=(batches(data.val.x), data.val.y), val_metric="auc", device=self.device,
                     amp_dtype=self.amp, checkpoint=self.folder / f"seed{seed}_{role}_scratch.ckpt",
                     description=f"{role} from scratch")
        return result, self._logits(model, batches(data.test.x))

    def subclass_head(self, teacher: Trained, seed: int, learned: bool) -> tuple[FitResult, Tensor, Tensor]:
        """A 2 × 2 subclass head on the fine-tuned teacher's pooled features (8 views): known subclasses
        from the votes (cross-entropy), or learned ones (class cross-entropy + auxiliary loss).
        Returns its fit, the subclass logits of every training view ``(8, N, 4)`` and of the test set."""
        config, data = self.config, self.dataset
        views = self.views["teacher"]
        top = teacher.top

        def pooled(maps: Tensor) -> Tensor:
            return apply_in_batches(lambda z: top(z, pre_logits=True), maps, batch_size=256, device=self.device,
                                    amp_dtype=self.amp)

        top.eval()
        train = torch.stack([pooled(v) for v in views.train])
        val, test = pooled(views.val), pooled(views.test)
        torch.manual_seed(seed)
        head = nn.Linear(train.shape[-1], 2 * SUBCLASSES_PER_CLASS)
        if learned:
            def loss_fn(outputs: Tensor, targets: Tensor, *_: Tensor) -> Tensor:
                hard = F.cross_entropy(_class_logits(outputs), targets)
                return hard + config.aux_weight * subclass_auxiliary_loss(outputs, config.aux_temperature)

            targets = data.train.y
        else:
            loss_fn, targets = _labels_loss, vote_subclasses(data.train.y, data.train.votes)
        kind = "learned" if learned else "known"
        result = fit(head, ViewBatches(train, targets, batch_size=config.batch_size, seed=seed), loss_fn,
                     epochs=config.head_epochs, lr=config.head_lr, val_data=(val, data.val.y), val_metric="auc",
                     class_logits=_class_logits, seed=seed, device=self.device, amp_dtype=self.amp,
                     checkpoint=self.folder / f"seed{seed}_teacher_{kind}_head.ckpt", description=f"{kind}-subclass head")
        return result, torch.stack([self._logits(head, v) for v in train]), self._logits(head, test)


def _probability(logits: Tensor) -> Tensor:
    """P(SSA) ``(N,)`` from class logits ``(N, 2)``."""
    return torch.softmax(logits.float(), -1)[:, 1]


def _row(seed: int, arm: str, role: str, model: str, labels: Tensor, logits: Tensor, result: FitResult,
         head_logits: Tensor | None = None, head_result: FitResult | None = None) -> dict:
    probability = _probability(logits)
    return {
        "seed": seed, "arm": arm, "role": role, "model": model,
        "val_auc": result.best_val_score, "test_auc": roc_auc(logits, labels),
        "test_auc_head": roc_auc(head_logits, labels) if head_logits is not None else np.nan,
        "balanced_accuracy": float(balanced_accuracy_score(labels.numpy(), (probability >= 0.5).long().numpy())),
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds + (head_result.train_seconds if head_result is not None else 0.0),
    }


def run_study(config: MhistConfig, dataset: kd_data.MhistData, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> MhistOutcome:
    """Train and evaluate every arm of the study for every seed (checkpointed: a rerun resumes).

    ``dataset`` comes from :func:`kdcourse.data.load_mhist` at ``config.size`` (with ``config.limit``)."""
    _check(config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    nets = load_backbones(config)  # fails first, and clearly, when pretrained weights are missing
    folder = (run_root or paths.runs_dir()) / "mhist" / config.key()
    start = time.perf_counter()
    views = {role: role_views(role, net, dataset, config, folder, device, amp) for role, net in nets.items()}
    cache_seconds = time.perf_counter() - start
    runner = TwoPhaseRunner(config, dataset, views, folder, device, amp)
    labels = dataset.test.y
    rows, grid_rows, history = [], [], {}
    scores: dict[str, dict[int, list[float]]] = {}
    names = dict(zip(ROLES, PAIRS[config.pair], strict=True))
    per_seed: dict[int, dict] = {}

    def keep(seed: int, arm: str, role: str, logits: Tensor, result: FitResult, head: Trained | None = None) -> None:
        rows.append(_row(seed, arm, role, names[role], labels, logits, result,
                         head.head_test_logits if head else None, head.head_fit if head else None))
        scores.setdefault(arm, {})[seed] = [round(p, 5) for p in _probability(logits).tolist()]
        if seed == config.seeds[0]:
            history[arm] = ([h["val_auc"] for h in head.head_fit.history] if head else []) + [h["val_auc"] for h in result.history]

    # teachers and the labels-only students, then the distillation grid
    for seed in config.seeds:
        teacher = runner.two_phase("teacher", seed, "teacher", keep_train_logits=True)
        keep(seed, "teacher", "teacher", teacher.test_logits, teacher.fit, teacher)
        fit_result, logits = runner.scratch("teacher", seed)
        keep(seed, "teacher_scratch", "teacher", logits, fit_result)
        student = runner.two_phase("student", seed, "student")
        keep(seed, "student", "student", student.test_logits, student.fit, student)
        fit_result, logits = runner.scratch("student", seed)
        keep(seed, "student_scratch", "student", logits, fit_result)
        for temperature in config.temperatures:
            for alpha in config.alphas:
                trained = runner.two_phase("student", seed, f"kd_T{temperature:g}_a{alpha:g}",
                                           _kd_loss(temperature, alpha), soft=teacher.train_logits)
                grid_rows.append({"seed": seed, "temperature": temperature, "alpha": alpha,
                                  "val_auc": trained.fit.best_val_score, "test_auc": roc_auc(trained.test_logits, labels)})
                per_seed.setdefault(seed, {})[(temperature, alpha)] = trained
        per_seed[seed]["teacher"] = teacher
    grid = pd.DataFrame(grid_rows)
    best = grid.groupby(["temperature", "alpha"])["val_auc"].mean().idxmax()
    chosen = {"temperature": float(best[0]), "alpha": float(best[1])}
    temperature, alpha = best

    # the chosen distillation, subclass distillation, and distillation through the assistant
    for seed in config.seeds:
        teacher, kd = per_seed[seed]["teacher"], per_seed[seed][best]
        keep(seed, "kd", "student", kd.test_logits, kd.fit, kd)
        for kind in ("known", "learned"):
            head_fit, train_sub, test_sub = runner.subclass_head(teacher, seed, learned=kind == "learned")
            rows.append(_row(seed, f"teacher_{kind}", "teacher", names["teacher"], labels, _class_logits(test_sub), head_fit))
            skd = runner.two_phase("student", seed, f"{kind}_skd", _subclass_kd_loss(temperature, alpha), soft=train_sub,
                                   outputs=2 * SUBCLASSES_PER_CLASS, class_logits=_class_logits)
            skd.test_logits, skd.head_test_logits = _class_logits(skd.test_logits), _class_logits(skd.head_test_logits)
            keep(seed, f"{kind}_skd", "student", skd.test_logits, skd.fit, skd)
            control = runner.two_phase("student", seed, f"{kind}_control", _kd_loss(temperature, alpha),
                                       soft=_class_logits(train_sub.flatten(0, 1)).view(*train_sub.shape[:2], 2))
            keep(seed, f"{kind}_control", "student", control.test_logits, control.fit, control)
        assistant = runner.two_phase("assistant", seed, "assistant", _kd_loss(temperature, alpha), soft=teacher.train_logits,
                                     keep_train_logits=True)
        keep(seed, "assistant", "assistant", assistant.test_logits, assistant.fit, assistant)
        takd = runner.two_phase("student", seed, "takd", _kd_loss(temperature, alpha), soft=assistant.train_logits)
        keep(seed, "takd", "student", takd.test_logits, takd.fit, takd)

    counts = {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}
    return MhistOutcome(config, pd.DataFrame(rows), grid, chosen, scores, labels.tolist(), history, cache_seconds, counts,
                        {role: net.weights for role, net in nets.items()})


def arm_summary(runs: pd.DataFrame, columns: tuple[str, ...] = ("test_auc", "test_auc_head", "balanced_accuracy", "val_auc")) -> pd.DataFrame:
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
    scores = {arm: {int(seed): values for seed, values in by_seed.items()} for arm, by_seed in scores.items()}  # JSON keys are text
    rows = []
    for arm, baseline in comparisons:
        row: dict = {"arm": arm, "baseline": baseline}
        a, b = _by_seed(runs, arm), _by_seed(runs, baseline)
        effects: dict[str, Effect | None] = {"seeds": paired_effect(a, b) if len(a.index.intersection(b.index)) > 1 else None}
        seeds = [seed for seed in scores[arm] if seed in scores[baseline]]
        effects["images"] = bootstrap_auc_effect([scores[arm][s] for s in seeds], [scores[baseline][s] for s in seeds], labels)
        for over, effect in effects.items():
            for name in ("mean", "std", "low", "high", "verdict"):
                row[f"{over} {name}"] = getattr(effect, name) if effect is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def phase_effect(runs: pd.DataFrame, arm: str) -> Effect:
    """What fine-tuning adds to feature extraction for ``arm``: test AUC after both phases minus after the
    head phase alone, paired over seeds, in AUC points."""
    return paired_effect(_by_seed(runs, arm), _by_seed(runs, arm, "test_auc_head"))
