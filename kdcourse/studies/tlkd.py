"""TL+KD: does distillation still help a student that already starts from ImageNet weights?

The question of the thesis among the source documents (a ViT-B/16 teacher and a ResNet-18 student on
CIFAR-10), asked here with the same code on any pair of ImageNet backbones and a data set of uint8
images. The teacher is trained first; the student is then trained with labels only (*TL*) and with
the teacher's soft targets added (*TL+KD*), in two regimes:

- ``thesis``: the student's backbone frozen, a new head trained on its pooled features with the
  thesis's recipe (SGD with momentum 0.9, weight decay 5e-4, learning rate 0.01, batches of 64, the
  rate cut tenfold on a validation plateau, early stopping);
- ``finetune``: what a practitioner would do: the head on pooled features first, then every layer on
  augmented images at a small learning rate (AdamW, cosine schedule).

TL+KD runs at the thesis's (T = 10, α = 0.1) and at the (T, α) of the best mean validation accuracy
on a grid. Every arm of a seed starts from the same head initialisation and sees the same batches.
The robustness sweeps (less data, noisy labels, CenterBlack and QuarterBlack occlusions of a fraction
of the training images) run in the thesis regime; the teacher is fixed and sees the same, occluded,
images as the student. Model selection and early stopping use a validation split; the test split
is only evaluated.

:func:`mnist_foreground` is the interpretability question where the foreground is known exactly:
the share of positive SHAP mass on the stroke pixels of MNIST digits, for the teacher, the KD
student and the scratch student of the MNIST distillation chapter.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from kdcourse import checkpoints, corruptions, hardware, metrics, paths
from kdcourse import data as kd_data
from kdcourse.backbones import Backbone, backbone, pooled_head, set_trainable, split_at
from kdcourse.stats import Effect, bootstrap_effect, paired_effect
from kdcourse.explain import foreground_share, shap_maps
from kdcourse.kd.hinton import check_alpha, check_temperature
from kdcourse.train import FitResult, fit, predict_logits
from kdcourse.transfer import ViewBatches, apply_in_batches, dihedral_view
from kdcourse.studies import mnist_distillation
from kdcourse.studies.common import config_key, json_records, with_overrides
from kdcourse.studies.mhist import ALL_VIEWS, TwoPhaseRunner, _kd_loss, _labels_loss, role_views

__all__ = [
    "Pair", "PAIRS", "TlkdConfig", "PROFILES", "config_for", "load_backbones", "load_data", "TlkdOutcome", "run_study",
    "outcome_record",
    "arm_scores", "effects_table", "epochs_to_reach", "speed_table", "sweep_table", "true_positive_change",
    "PreLogits", "OnImages", "ForegroundOutcome", "mnist_foreground", "image_foreground", "foreground_effects", "pass_counts",
    "estimated_seconds",
]


@dataclass(frozen=True)
class Pair:
    """A teacher and a student for one data set. The teacher is trained as the MHIST chapter trains it
    (``"two_phase"``: a head on frozen features, then the last stage) or fine-tuned whole like the
    students of the fine-tuning regime (``"fine_tune"``: a head, then every layer; any timm network)."""

    dataset: str
    teacher: str
    student: str
    teacher_recipe: str


PAIRS: dict[str, Pair] = {
    "mhist_offline": Pair("mhist", "mobilenetv2_100.tflite_in1k", "mobilenetv1_025.tflite_in1k", "two_phase"),
    # the thesis's pair; timm's releases of torchvision's ResNet-18 and an ImageNet-1k-only ViT-B/16
    "cifar10_thesis": Pair("cifar10", "vit_base_patch16_224.augreg_in1k", "resnet18.tv_in1k", "fine_tune"),
    "cifar10_tiny": Pair("cifar10", "convnext_atto", "resnet10t", "fine_tune"),  # smoke runs: small networks, random weights
}
VIEW_CODES = {"mhist": ALL_VIEWS, "cifar10": (0, 4)}  # histology: 8 symmetries; photographs: random horizontal flips
CLASSES = {"mhist": kd_data.MHIST_CLASSES, "cifar10": kd_data.CIFAR10_CLASSES}
REGIMES = ("thesis", "finetune")
SWEEPS = ("fraction", "label_noise", "center_black", "quarter_black")
ARMS = ("tl", "tlkd_thesis", "tlkd_chosen")
ARM_LABELS = {"tl": "TL only", "tlkd_thesis": "TL+KD, thesis (T = 10, α = 0.1)", "tlkd_chosen": "TL+KD, (T, α) chosen on validation"}
CENTER_BLACK_RANGE = (200, 224)  # the thesis's CenterBlack side on 224-px images, scaled to the study's size


@dataclass(frozen=True)
class TlkdConfig:
    """Everything that defines a run; sizes in pixels, fractions in [0, 1]."""

    pair: str = "mhist_offline"
    seeds: tuple[int, ...] = (0, 7, 42)
    size: int = 160
    limit: int | None = None  # MHIST: at most this many images per split; CIFAR-10: training images kept
    val_size: int = 5000  # CIFAR-10's validation split, carved from its training batches
    pretrained: bool = True  # False only in smoke runs (random weights, said so)
    data: str = "real"  # "real", or "generated" for a smoke run on generated files in the real format (said so)
    split_reduction: int = 16
    batch_size: int = 64
    # the fine-tuning regime: head phase, then every layer (the two-phase teacher: then its last stage)
    head_epochs: int = 30
    head_lr: float = 1e-3
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4
    # the thesis regime
    sgd_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_epochs: int = 30
    plateau_patience: int = 2
    early_stopping_patience: int = 5
    thesis_kd: tuple[float, float] = (10.0, 0.1)  # (T, α) of the thesis
    temperatures: tuple[float, ...] = (1.0, 4.0, 10.0)
    alphas: tuple[float, ...] = (0.1, 0.5, 0.9)
    regimes: tuple[str, ...] = REGIMES
    sweeps: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("fraction", (0.1, 0.25, 0.5)), ("label_noise", (0.1, 0.2, 0.3)),
        ("center_black", (0.25, 0.5, 0.95)), ("quarter_black", (0.25, 0.5, 1.0)),
    )
    thresholds: tuple[float, ...] = (0.7, 0.75, 0.8)  # validation accuracies for "epochs to reach"
    mixed_precision: bool = True

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder."""
        return config_key(self)

    @property
    def dataset(self) -> str:
        return PAIRS[self.pair].dataset


PROFILES: dict[str, TlkdConfig] = {
    "smoke": TlkdConfig(pair="cifar10_tiny", seeds=(0, 7), size=32, limit=160, val_size=40, pretrained=False,
                        data="generated", batch_size=16, head_epochs=2, finetune_epochs=1, max_epochs=3,
                        temperatures=(10.0,), alphas=(0.1, 0.5),
                        sweeps=(("fraction", (0.5,)), ("label_noise", (0.2,)), ("center_black", (0.5,)), ("quarter_black", (0.5,))),
                        thresholds=(0.1, 0.2)),
    "full": TlkdConfig(pair="cifar10_thesis", size=224, thresholds=(0.8, 0.85, 0.9)),  # a GPU machine with the network
    "mhist": TlkdConfig(),  # the recorded run: MHIST with the offline weights, on a CPU
}


def config_for(profile: str, **overrides: object) -> TlkdConfig:
    """The configuration of ``profile`` (``smoke``, ``full`` or ``mhist``) with ``overrides``; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


def _check(config: TlkdConfig) -> None:
    if config.pair not in PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAIRS)}, got {config.pair!r}")
    if len(config.seeds) < 1 or len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {config.seeds}")
    for name in ("batch_size", "head_epochs", "finetune_epochs", "max_epochs", "plateau_patience", "early_stopping_patience"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.size < 32:
        raise ValueError(f"size must be at least 32 px (the networks downsample by 32), got {config.size}")
    for temperature in (*config.temperatures, config.thesis_kd[0]):
        check_temperature(temperature)
    for alpha in (*config.alphas, config.thesis_kd[1]):
        check_alpha(alpha)
    if unknown := set(config.regimes) - set(REGIMES):
        raise ValueError(f"regimes must be among {REGIMES}, got {sorted(unknown)}")
    if unknown := {name for name, _ in config.sweeps} - set(SWEEPS):
        raise ValueError(f"sweeps must be among {SWEEPS}, got {sorted(unknown)}")
    if config.sweeps and "thesis" not in config.regimes:
        raise ValueError("the sweeps run in the thesis regime: keep 'thesis' in regimes or set sweeps=()")
    if config.data not in ("real", "generated"):
        raise ValueError(f"data must be 'real' or 'generated', got {config.data!r}")


def load_backbones(config: TlkdConfig) -> dict[str, Backbone]:
    """Teacher and student of ``config.pair`` (pretrained unless ``config.pretrained`` is false; random
    weights are drawn under a fixed seed). Raises :class:`kdcourse.backbones.MissingWeightsError`."""
    pair = PAIRS[config.pair]
    classes = len(CLASSES[pair.dataset])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return {role: backbone(name, classes, weights="imagenet" if config.pretrained else None)
                for role, name in (("teacher", pair.teacher), ("student", pair.student))}


def _resized(split: kd_data.ImageSplit, size: int) -> kd_data.ImageSplit:
    """uint8 images resized once to ``size`` px (bilinear, antialiased), in chunks to bound the memory."""
    if split.x.shape[-1] == size:
        return split
    chunks = [torch.nn.functional.interpolate(split.x[i : i + 2048].float(), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
              for i in range(0, len(split.x), 2048)]
    return kd_data.ImageSplit(torch.cat(chunks), split.y)


def load_data(config: TlkdConfig, root: str | Path | None = None, *, download: bool = True,
              ) -> kd_data.MhistData | kd_data.Cifar10Data:
    """The data set of ``config`` at ``config.size`` px: MHIST (:func:`kdcourse.data.load_mhist`) or CIFAR-10
    (:func:`kdcourse.data.load_cifar10`, downloaded where the network allows and ``download`` is true,
    resized from 32 px). Raises :class:`kdcourse.data.MissingDataError` naming what is missing."""
    if config.dataset == "mhist":
        return kd_data.load_mhist(root, size=config.size, limit=config.limit)
    cifar = kd_data.load_cifar10(root, val_size=config.val_size, download=download)
    train = cifar.train if config.limit is None else cifar.train.subset(
        kd_data.stratified_split(cifar.train.y, min(config.limit, len(cifar.train) - 1), 0)[1])
    return kd_data.Cifar10Data(_resized(train, config.size), _resized(cifar.val, config.size),
                               _resized(cifar.test, config.size), cifar.classes)


class OnImages(nn.Module):
    """``network`` on uint8 images ``(N, 3, H, W)``: normalised with ``mean``/``std`` first (for training on
    cached image views, which :class:`kdcourse.transfer.ViewBatches` serves as they are stored)."""

    def __init__(self, network: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.network, self.mean, self.std = network, mean, std

    def forward(self, x: Tensor) -> Tensor:
        return self.network(kd_data.normalise_images(x, self.mean, self.std).contiguous(memory_format=hardware.CONV_MEMORY_FORMAT))


class PreLogits(nn.Module):
    """A timm network's pooled features ``(N, D)`` of normalised images ``(N, 3, H, W)`` (its classifier left out)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


@dataclass
class TlkdOutcome:
    """What :func:`run_study` measured.

    ``runs``: one row per (regime, arm, seed): ``val_accuracy``, test ``accuracy``, macro ``precision``,
    ``recall``, ``f1``, ``auc`` (two classes only, else NaN), ``best_epoch``, ``epochs`` (run),
    ``train_seconds``. ``confusion``: per regime, arm and seed the test confusion matrix (rows: true
    class). ``history``: one row per (regime, arm, seed, epoch) with ``val_accuracy`` (the fine-tuning
    regime counts the head's epochs first). ``grid``: per (regime, seed, T, α) ``val_accuracy``;
    ``chosen``: per regime the (T, α) of the best mean. ``sweeps``: per (sweep, level, arm, seed) the
    test ``accuracy`` and ``f1`` and ``val_accuracy`` (``tlkd_chosen`` only where the thesis regime chose
    another (T, α) than the thesis's). ``teachers``: per seed the teacher's test scores.
    ``models``: the networks per regime, arm and seed (on normalised images), for explanations.
    """

    config: TlkdConfig
    runs: pd.DataFrame
    confusion: dict[str, dict[str, dict[int, list[list[int]]]]]
    history: pd.DataFrame
    grid: pd.DataFrame
    chosen: dict[str, dict[str, float]]
    sweeps: pd.DataFrame
    teachers: pd.DataFrame
    data_counts: dict[str, int]
    weights: dict[str, str]
    cache_seconds: float
    sweep_seconds: float
    models: dict[str, dict[str, dict[int, nn.Module]]] = field(default_factory=dict)


def _scores(logits: Tensor, labels: Tensor) -> dict[str, float]:
    scores = metrics.classification_scores(logits, labels)
    auc = metrics.roc_auc(logits, labels) if logits.shape[1] == 2 else np.nan
    return {"accuracy": scores["accuracy"], "precision": scores["precision"], "recall": scores["recall"],
            "f1": scores["f1"], "auc": auc}


class _Study:
    """The networks of one run: cached views, the teachers, and the students of both regimes."""

    def __init__(self, config: TlkdConfig, dataset: kd_data.MhistData | kd_data.Cifar10Data, folder: Path,
                 device: torch.device) -> None:
        self.config, self.dataset, self.folder, self.device = config, dataset, folder, device
        self.amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
        self.pair = PAIRS[config.pair]
        self.codes = VIEW_CODES[self.pair.dataset]
        self.classes = len(CLASSES[self.pair.dataset])
        self.nets = load_backbones(config)  # fails first, and clearly, when pretrained weights are missing
        start = time.perf_counter()
        self.views = {role: role_views(role, net, dataset, config, folder, device, self.amp, self.codes)
                      for role, net in self.nets.items()}
        self.cache_seconds = time.perf_counter() - start
        names = {"teacher": self.pair.teacher, "student": self.pair.student}
        self.teacher_runner = TwoPhaseRunner(config, dataset, self.views, folder, device, self.amp, names, val_metric="auc"
                                             if self.classes == 2 else "accuracy")  # the MHIST chapter selects its teacher on AUC
        self.features = {role: PreLogits(net.model).eval() for role, net in self.nets.items()}  # the frozen pretrained networks

    def _logits(self, module: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
        return apply_in_batches(module, inputs, batch_size=256, device=self.device, amp_dtype=self.amp)

    def teacher(self, seed: int) -> tuple[nn.Module, Tensor, dict[str, float]]:
        """The teacher of ``seed``: its network (normalised images → logits), its logits on every training view
        ``(V, N, K)`` and its test scores."""
        if self.pair.teacher_recipe == "two_phase":
            trained = self.teacher_runner.two_phase("teacher", seed, "teacher", keep_train_logits=True)
            trunk, _ = split_at(self.nets["teacher"].model, self.config.split_reduction)
            network, train_logits, test_logits = nn.Sequential(trunk, trained.top), trained.train_logits, trained.test_logits
        else:
            network, test_logits, _, _ = self._fine_tuned("teacher", seed, "teacher", _labels_loss, None)
            on_images = OnImages(network, self.nets["teacher"].mean, self.nets["teacher"].std)
            train_logits = torch.stack([predict_logits(on_images, self._image_batches(view), device=self.device, amp_dtype=self.amp)
                                        for view in self.image_views])
        return network.eval(), train_logits, _scores(test_logits, self.dataset.test.y)

    def _thesis_head(self, role: str, seed: int, name: str, loss_fn: Callable[..., Tensor], pooled: Tensor, targets: Tensor,
                     soft: Tensor | None = None) -> tuple[nn.Module, FitResult]:
        """A new head on pooled features ``(V, n, D)`` trained with the thesis's recipe."""
        config, views = self.config, self.views[role]
        model = self._fresh_whole(role, seed)
        head = pooled_head(model)
        extras = () if soft is None else (soft,)
        result = fit(head, ViewBatches(pooled, targets, *extras, batch_size=config.batch_size, seed=seed), loss_fn,
                     epochs=config.max_epochs, lr=config.sgd_lr, optimizer="sgd", momentum=config.momentum,
                     weight_decay=config.weight_decay, schedule="plateau", plateau_patience=config.plateau_patience,
                     early_stopping_patience=config.early_stopping_patience, val_data=(views.pooled_val, self.dataset.val.y),
                     val_metric="accuracy", seed=seed, device=self.device, amp_dtype=self.amp,
                     checkpoint=self.folder / f"seed{seed}_thesis_{name}.ckpt", description=f"{name} (thesis regime)")
        return head, result

    def student(self, regime: str, seed: int, name: str, loss_fn: Callable[..., Tensor], soft: Tensor | None,
                pooled: Tensor | None = None, targets: Tensor | None = None, subset: Tensor | None = None,
                ) -> tuple[nn.Module, Tensor, list[float], FitResult]:
        """A student of ``regime``; returns its network, test logits, validation accuracy per epoch and fit
        (whose ``best_val_score`` is the validation accuracy of the returned network).

        ``pooled``/``targets``/``subset`` replace the training features, labels and images (the sweeps)."""
        if regime == "finetune":
            return self._fine_tuned("student", seed, name, loss_fn, soft)
        views = self.views["student"]
        pooled = views.pooled_train if pooled is None else pooled
        targets = self.dataset.train.y if targets is None else targets
        if subset is not None:
            pooled, targets, soft = pooled[:, subset], targets[subset], None if soft is None else soft[:, subset]
        head, result = self._thesis_head("student", seed, name, loss_fn, pooled, targets, soft)
        network = nn.Sequential(self.features["student"], head).eval()
        return network, self._logits(head, views.pooled_test), [h["val_accuracy"] for h in result.history], result

    def _image_batches(self, images: Tensor) -> kd_data.TensorBatches:
        return kd_data.TensorBatches(images, batch_size=4 * self.config.batch_size, shuffle=False)

    def _fine_tuned(self, role: str, seed: int, name: str, loss_fn: Callable[..., Tensor], soft: Tensor | None,
                    ) -> tuple[nn.Module, Tensor, list[float], FitResult]:
        """The fine-tuning regime: a new head on the frozen network's pooled features (AdamW), then every
        layer on augmented images (AdamW at ``finetune_lr``, cosine schedule; pretrained BatchNorm stays
        frozen). Both phases draw the same views of the same images in the same order."""
        config, views, y = self.config, self.views[role], self.dataset.train.y
        net = self.nets[role]
        extras = () if soft is None else (soft,)
        common = {"seed": seed, "device": self.device, "amp_dtype": self.amp, "val_metric": "accuracy"}
        model = self._fresh_whole(role, seed)
        head_fit = fit(pooled_head(model), ViewBatches(views.pooled_train, y, *extras, batch_size=config.batch_size, seed=seed),
                       loss_fn, epochs=config.head_epochs, lr=config.head_lr, val_data=(views.pooled_val, self.dataset.val.y),
                       checkpoint=self.folder / f"seed{seed}_finetune_{name}_head.ckpt", description=f"finetune_{name} head",
                       **common)
        set_trainable(model, True)
        network = OnImages(model.to(memory_format=hardware.CONV_MEMORY_FORMAT), net.mean, net.std)
        result = fit(network, ViewBatches(self.image_views, y, *extras, batch_size=config.batch_size, seed=seed), loss_fn,
                     epochs=config.finetune_epochs, lr=config.finetune_lr, schedule="cosine",
                     val_data=(self._image_batches(self.dataset.val.x), self.dataset.val.y),
                     checkpoint=self.folder / f"seed{seed}_finetune_{name}.ckpt",
                     description=f"finetune_{name} (every layer)", **common)
        test = predict_logits(network, self._image_batches(self.dataset.test.x), device=self.device, amp_dtype=self.amp)
        both = dataclasses.replace(result, history=head_fit.history + result.history,
                                   best_epoch=len(head_fit.history) + result.best_epoch)  # epochs and seconds of both phases
        return model.eval(), test, [h["val_accuracy"] for h in both.history], both

    def _fresh_whole(self, role: str, seed: int) -> nn.Module:
        """A new network of ``role`` with its head initialised from ``seed`` and everything but the head frozen."""
        torch.manual_seed(seed)
        model = backbone(self.nets[role].name, self.classes, weights="imagenet" if self.config.pretrained else None).model
        set_trainable(model, False)
        set_trainable(model.get_classifier(), True)
        return model

    @functools.cached_property
    def image_views(self) -> Tensor:
        """Every training image in each of the augmentation's views, uint8 ``(V, N, 3, H, W)`` (computed once)."""
        return torch.stack([dihedral_view(self.dataset.train.x, code) for code in self.codes])

    def occluded(self, teacher: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
        """Student pooled features ``(V, n, D)`` (of its frozen pretrained network) and teacher logits ``(V, n, K)``
        on every view of uint8 ``images``, computed batch by batch."""
        out = []
        for role, module in (("student", self.features["student"]), ("teacher", teacher)):
            on_images = OnImages(module, self.nets[role].mean, self.nets[role].std)
            out.append(torch.stack([apply_in_batches(on_images, dihedral_view(images, code), batch_size=64, device=self.device,
                                                     amp_dtype=self.amp) for code in self.codes]))
        return out[0], out[1]


def _grid_name(temperature: float, alpha: float) -> str:
    return f"kd_T{temperature:g}_a{alpha:g}"


def _sweep_training(study: _Study, teacher: nn.Module, teacher_logits: Tensor, sweep: str, level: float, seed: int,
                    stream: int) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """(pooled, targets, soft, subset) of one sweep level; None keeps the clean value."""
    config, train = study.config, study.dataset.train
    generator = torch.Generator().manual_seed(seed * 1_000 + stream)
    if sweep == "fraction":
        return None, None, None, corruptions.training_fraction(train.y, level, seed)
    if sweep == "label_noise":
        return None, corruptions.noisy_labels(train.y, level, study.classes, generator)[0], None, None
    if sweep == "center_black":
        low = round(CENTER_BLACK_RANGE[0] / CENTER_BLACK_RANGE[1] * config.size)
        occlusion = lambda x, g: corruptions.center_black(x, g, low=low, high=config.size)  # noqa: E731
    else:
        occlusion = corruptions.quarter_black
    images, chosen = corruptions.corrupt_fraction(train.x, level, occlusion, generator)
    pooled, soft = study.views["student"].pooled_train.clone(), teacher_logits.clone()
    if len(chosen):  # computed once, then read back (a resumed or re-rendered run does not pay for it again)
        occluded = images[chosen]
        key = {"teacher": checkpoints.module_fingerprint(teacher), "images": checkpoints.tensor_fingerprint(occluded),
               "student": checkpoints.module_fingerprint(study.features["student"])}
        values = checkpoints.cached(study.folder / "occluded" / f"seed{seed}_{sweep}{level:g}.pt", key,
                                    lambda: dict(zip(("pooled", "soft"), study.occluded(teacher, occluded), strict=True)))
        pooled[:, chosen], soft[:, chosen] = values["pooled"], values["soft"]
    return pooled, None, soft, None


def run_study(config: TlkdConfig, dataset: kd_data.MhistData | kd_data.Cifar10Data, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> TlkdOutcome:
    """Train and evaluate every arm, regime and sweep level for every seed (checkpointed: a rerun resumes).

    ``dataset`` comes from :func:`load_data` with the same ``config``."""
    _check(config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = (run_root or paths.runs_dir()) / "tlkd" / config.key()
    study = _Study(config, dataset, folder, device)
    labels = dataset.test.y
    runs, history, grid_rows, sweep_rows, teacher_rows = [], [], [], [], []
    confusion: dict[str, dict[str, dict[int, list[list[int]]]]] = {}
    models: dict[str, dict[str, dict[int, nn.Module]]] = {}
    teachers: dict[int, tuple[nn.Module, Tensor]] = {}
    trained: dict[tuple[str, int, str], tuple[nn.Module, Tensor, list[float], FitResult]] = {}

    def keep(regime: str, arm: str, seed: int, outcome: tuple[nn.Module, Tensor, list[float], FitResult]) -> None:
        network, logits, curve, result = outcome
        runs.append({"regime": regime, "arm": arm, "seed": seed, "val_accuracy": result.best_val_score, **_scores(logits, labels),
                     "best_epoch": result.best_epoch, "epochs": len(curve), "train_seconds": result.train_seconds})
        history.extend({"regime": regime, "arm": arm, "seed": seed, "epoch": epoch, "val_accuracy": value}
                       for epoch, value in enumerate(curve, 1))
        confusion.setdefault(regime, {}).setdefault(arm, {})[seed] = metrics.confusion_matrix(
            logits, labels, study.classes).tolist()
        models.setdefault(regime, {}).setdefault(arm, {})[seed] = network

    points = [(t, a) for t in config.temperatures for a in config.alphas]
    if tuple(config.thesis_kd) not in points:
        points.append(tuple(config.thesis_kd))
    for seed in config.seeds:
        teacher, teacher_logits, teacher_scores = study.teacher(seed)
        teachers[seed] = (teacher, teacher_logits)
        teacher_rows.append({"seed": seed, **teacher_scores})
        for regime in config.regimes:
            trained[(regime, seed, "tl")] = study.student(regime, seed, "tl", _labels_loss, None)
            for temperature, alpha in points:
                outcome = study.student(regime, seed, _grid_name(temperature, alpha), _kd_loss(temperature, alpha), teacher_logits)
                trained[(regime, seed, _grid_name(temperature, alpha))] = outcome
                grid_rows.append({"regime": regime, "seed": seed, "temperature": temperature, "alpha": alpha,
                                  "val_accuracy": outcome[3].best_val_score})
    grid = pd.DataFrame(grid_rows)
    chosen = {}
    for regime in config.regimes:
        means = grid[grid.regime == regime].groupby(["temperature", "alpha"])["val_accuracy"].mean()
        best = means.idxmax()
        chosen[regime] = {"temperature": float(best[0]), "alpha": float(best[1])}
        for seed in config.seeds:
            keep(regime, "tl", seed, trained[(regime, seed, "tl")])
            keep(regime, "tlkd_thesis", seed, trained[(regime, seed, _grid_name(*config.thesis_kd))])
            keep(regime, "tlkd_chosen", seed, trained[(regime, seed, _grid_name(*best))])

    start = time.perf_counter()
    kd_points = {"tlkd_thesis": tuple(config.thesis_kd)}
    if config.sweeps and (best := (chosen["thesis"]["temperature"], chosen["thesis"]["alpha"])) != kd_points["tlkd_thesis"]:
        kd_points["tlkd_chosen"] = best  # only when validation chose another (T, α) than the thesis's
    for seed in config.seeds:
        teacher, teacher_logits = teachers[seed]
        for stream, (sweep, levels) in enumerate(config.sweeps):
            for index, level in enumerate(levels):
                pooled, targets, soft, subset = _sweep_training(study, teacher, teacher_logits, sweep, level, seed,
                                                                100 * stream + index)
                soft = teacher_logits if soft is None else soft
                arms = {"tl": (_labels_loss, None)} | {arm: (_kd_loss(t, a), soft) for arm, (t, a) in kd_points.items()}
                for arm, (loss_fn, extra) in arms.items():
                    name = f"{sweep}{level:g}_{arm if arm == 'tl' else _grid_name(*kd_points[arm])}"
                    _, logits, _, result = study.student("thesis", seed, name, loss_fn, extra, pooled, targets, subset)
                    scores = _scores(logits, labels)
                    sweep_rows.append({"sweep": sweep, "level": level, "arm": arm, "seed": seed, "val_accuracy": result.best_val_score,
                                       "accuracy": scores["accuracy"], "f1": scores["f1"]})
    counts = {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}
    return TlkdOutcome(config, pd.DataFrame(runs), confusion, pd.DataFrame(history), grid, chosen, pd.DataFrame(sweep_rows),
                       pd.DataFrame(teacher_rows), counts, {role: net.weights for role, net in study.nets.items()},
                       study.cache_seconds, time.perf_counter() - start, models)


def outcome_record(outcome: TlkdOutcome) -> dict:
    """The JSON-ready findings of a run (what a result file keeps; the networks are left out)."""
    config = {key: list(value) if isinstance(value, tuple) else value for key, value in vars(outcome.config).items()}
    config["sweeps"] = [[sweep, list(levels)] for sweep, levels in outcome.config.sweeps]
    return {
        "config": config, "classes": list(CLASSES[outcome.config.dataset]), "data_counts": outcome.data_counts, "weights": outcome.weights, "chosen": outcome.chosen,
        "runs": json_records(outcome.runs), "history": json_records(outcome.history), "grid": json_records(outcome.grid),
        "sweeps": json_records(outcome.sweeps), "teachers": json_records(outcome.teachers),
        "confusion": {regime: {arm: {str(seed): matrix for seed, matrix in by_seed.items()} for arm, by_seed in arms.items()}
                      for regime, arms in outcome.confusion.items()},
        "cache_seconds": round(outcome.cache_seconds, 1), "sweep_seconds": round(outcome.sweep_seconds, 1),
        "train_seconds": round(float(outcome.runs.train_seconds.sum()), 1),
    }


def _series(frame: pd.DataFrame, column: str, **where: object) -> pd.Series:
    rows = frame
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows.set_index("seed")[column]


def arm_scores(runs: pd.DataFrame, columns: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")) -> pd.DataFrame:
    """Mean and std over seeds of ``columns`` per (regime, arm), as fractions."""
    stats = runs.groupby(["regime", "arm"], sort=False)[list(columns)].agg(["mean", "std"])
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return stats


def effects_table(runs: pd.DataFrame, columns: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")) -> pd.DataFrame:
    """TL+KD − TL per regime, KD setting and metric, in points, paired over seeds (:func:`kdcourse.stats.paired_effect`)."""
    rows = []
    for regime in dict.fromkeys(runs["regime"]):
        for arm in ("tlkd_thesis", "tlkd_chosen"):
            for column in columns:
                effect = paired_effect(_series(runs, column, regime=regime, arm=arm), _series(runs, column, regime=regime, arm="tl"))
                rows.append({"regime": regime, "arm": arm, "metric": column, **effect.as_dict()})
    return pd.DataFrame(rows)


def true_positive_change(confusion: dict, regime: str, arm: str, classes: tuple[str, ...]) -> pd.DataFrame:
    """Per class: true positives of ``arm`` minus those of TL on the test set, mean and std over seeds
    (the thesis's Table 6.2), and the class's test count."""
    seeds = sorted(confusion[regime]["tl"], key=int)
    diffs = np.array([np.diag(np.array(confusion[regime][arm][s])) - np.diag(np.array(confusion[regime]["tl"][s])) for s in seeds])
    counts = np.array(confusion[regime]["tl"][seeds[0]]).sum(1)
    return pd.DataFrame({"class": list(classes), "test images": counts, "change mean": diffs.mean(0),
                         "change std": diffs.std(0, ddof=1) if len(seeds) > 1 else np.nan})


def epochs_to_reach(history: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per (regime, arm, seed) the first epoch whose validation accuracy reaches ``threshold`` (NaN: never)."""
    reached = history[history.val_accuracy >= threshold].groupby(["regime", "arm", "seed"])["epoch"].min()
    every = history.groupby(["regime", "arm", "seed"])["epoch"].max().rename("epochs")
    return pd.concat([reached.rename("epoch"), every], axis=1).reset_index()


def speed_table(history: pd.DataFrame, thresholds: tuple[float, ...]) -> pd.DataFrame:
    """Per regime, KD arm and threshold: epochs to reach it (mean ± std over the seeds where both arms did),
    how many seeds reached it per arm, and TL+KD − TL in epochs, paired over those seeds."""
    rows = []
    for threshold in thresholds:
        reach = epochs_to_reach(history, threshold)
        for regime in dict.fromkeys(history["regime"]):
            tl = _series(reach, "epoch", regime=regime, arm="tl")
            for arm in ("tlkd_thesis", "tlkd_chosen"):
                kd = _series(reach, "epoch", regime=regime, arm=arm)
                both = pd.concat({"kd": kd, "tl": tl}, axis=1).dropna()
                row = {"regime": regime, "arm": arm, "threshold": threshold, "seeds reached (TL)": int(tl.notna().sum()),
                       "seeds reached (TL+KD)": int(kd.notna().sum()),
                       "TL epochs mean": both["tl"].mean(), "TL+KD epochs mean": both["kd"].mean()}
                if len(both) > 1:
                    row |= paired_effect(both["kd"], both["tl"], scale=1.0, unit="epochs").as_dict()
                rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(sweeps: pd.DataFrame, column: str = "accuracy") -> pd.DataFrame:
    """Per (sweep, level, KD arm): TL and TL+KD test ``column`` (mean, std over seeds) and their paired
    difference in points with its verdict."""
    rows = []
    for (sweep, level), group in sweeps.groupby(["sweep", "level"], sort=False):
        tl = _series(group, column, arm="tl")
        for arm in [a for a in dict.fromkeys(group["arm"]) if a != "tl"]:
            kd = _series(group, column, arm=arm)
            row = {"sweep": sweep, "level": level, "arm": arm, "TL mean": tl.mean(), "TL std": tl.std(),
                   "TL+KD mean": kd.mean(), "TL+KD std": kd.std()}
            if len(tl) > 1:
                row |= paired_effect(kd, tl).as_dict()
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- MNIST: where the foreground is exact


@dataclass
class ForegroundOutcome:
    """Foreground share of positive SHAP mass on MNIST test images.

    ``shares``: one row per (seed, model, image) with ``share`` (the positive SHAP mass of the predicted
    class on stroke pixels, over all its positive mass) and ``stroke`` (the stroke pixels' share of the
    image: what a map spread evenly over the pixels would score). ``images``: the test indices explained."""

    shares: pd.DataFrame
    images: list[int]
    seconds: float


def mnist_foreground(config: mnist_distillation.StudyConfig, dataset: kd_data.ImageData, *, images: int = 200,
                     background: int = 100, samples: int = 200, run_root: Path | None = None,
                     device: str | torch.device | None = None) -> ForegroundOutcome:
    """SHAP maps of the MNIST distillation chapter's teacher, KD student and scratch student, for every seed
    of ``config``, on the same ``images`` random test images; stroke pixels (any ink) are the foreground.

    The networks are read from that chapter's checkpoints (trained first when absent)."""
    if images < 1 or background < 1 or samples < 1:
        raise ValueError(f"images, background and samples must be >= 1, got {images}, {background}, {samples}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(dataset.test), generator=generator)[:images]
    rest = torch.randperm(len(dataset.train), generator=generator)[:background]
    x = dataset.test.x[chosen]
    reference = dataset.train.x[rest]
    strokes = (x * kd_data.MNIST_STD + kd_data.MNIST_MEAN > 0.5 / 255)[:, 0].numpy()  # any ink, (N, 28, 28)
    stroke_share = strokes.reshape(len(x), -1).mean(1)
    rows = []
    for seed in config.seeds:
        models = mnist_distillation.seed_models(config, dataset, seed, run_root=run_root, device=device)
        for name, model in models.items():
            maps = shap_maps(model.float(), x, reference, samples=samples, seed=seed)
            rows.extend({"seed": seed, "model": name, "image": int(i), "share": foreground_share(m, s), "stroke": float(p)}
                        for i, m, s, p in zip(chosen.tolist(), maps, strokes, stroke_share, strict=True))
    return ForegroundOutcome(pd.DataFrame(rows), chosen.tolist(), time.perf_counter() - start)


def image_foreground(models: dict[str, dict[int, nn.Module]], images: Tensor, masks: np.ndarray, background: Tensor,
                     mean: tuple[float, ...], std: tuple[float, ...], *, samples: int = 200) -> pd.DataFrame:
    """Foreground share of positive SHAP mass for photographs whose foreground ``masks`` ``(N, H, W)`` come
    from an automatic method (:func:`kdcourse.explain.grabcut_foreground`).

    ``models`` maps a name (e.g. an arm) to its network per seed (normalised images → logits); ``images`` and
    ``background`` are uint8 ``(N, 3, H, W)``. One row per (seed, model, image): ``share`` and ``stroke``
    (here the mask's share of the image, the score of an evenly spread map), as :func:`mnist_foreground`.
    Images whose mask is empty or covers everything (GrabCut found no object) say nothing about where a
    map points and are left out; ``image`` keeps their index in ``images``."""
    area = masks.reshape(len(masks), -1).mean(1)
    kept = np.flatnonzero((area > 0) & (area < 1))
    if len(kept) == 0:
        raise ValueError("every mask is empty or full: no image has a foreground to score")
    x = kd_data.normalise_images(images[torch.from_numpy(kept)], mean, std)
    reference = kd_data.normalise_images(background, mean, std)
    masks, area = masks[kept], area[kept]
    rows = []
    for name, by_seed in models.items():
        for seed, model in by_seed.items():
            maps = shap_maps(model.float(), x, reference, samples=samples, seed=int(seed))
            rows.extend({"seed": int(seed), "model": name, "image": int(i), "share": foreground_share(m, k), "stroke": float(a)}
                        for i, m, k, a in zip(kept, maps, masks, area, strict=True))
    return pd.DataFrame(rows)


FOREGROUND_COMPARISONS = (("kd", "scratch"), ("teacher", "kd"), ("teacher", "scratch"))


def foreground_effects(shares: pd.DataFrame, comparisons: tuple[tuple[str, str], ...] = FOREGROUND_COMPARISONS,
                       ) -> pd.DataFrame:
    """Paired differences of the foreground share (points) for ``comparisons`` (model, baseline): over seeds
    (per-seed means, paired t) and over images (a bootstrap of the per-image differences averaged over seeds)."""
    rows = []
    per_seed = shares.groupby(["model", "seed"])["share"].mean()
    per_image = shares.groupby(["model", "image"])["share"].mean()
    for model, baseline in comparisons:
        entries: dict[str, Effect | None] = {
            "seeds": paired_effect(per_seed[model], per_seed[baseline]) if shares.seed.nunique() > 1 else None,
            "images": bootstrap_effect(per_image[model].to_numpy(), per_image[baseline].to_numpy())}
        row: dict = {"model": model, "baseline": baseline}
        for over, effect in entries.items():
            for key in ("mean", "std", "low", "high", "verdict"):
                row[f"{over} {key}"] = getattr(effect, key) if effect is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- what the CIFAR-10 profile costs


def pass_counts(config: TlkdConfig, train: int, val: int, test: int, shap_images: int = 200, shap_samples: int = 200,
                ) -> pd.DataFrame:
    """The images each network must process in a run of ``config`` on splits of these sizes, by stage.

    Columns: ``stage``, ``network`` (teacher or student), ``pass`` (``forward`` or ``forward+backward``) and
    ``images``. Training on cached features (heads, the thesis regime, the sweeps' students) costs next to
    nothing and is left out. The last
    stage, the thesis's recipe without caches (every epoch the teacher's forward and the whole student's
    forward and backward pass, ``max_epochs`` epochs per network), is there for comparison."""
    views = len(VIEW_CODES[PAIRS[config.pair].dataset])
    seeds = len(config.seeds)
    once = views * train + val + test
    networks = seeds * (1 + len(config.temperatures) * len(config.alphas))
    occluded = sum(sum(levels) for sweep, levels in config.sweeps if sweep in ("center_black", "quarter_black"))
    explained = 2 * len(config.regimes) * seeds * shap_images * shap_samples  # TL and TL+KD students
    rows = [("cached views", "teacher", "forward", once), ("cached views", "student", "forward", once),
            # the two-phase teacher trains its last stage only: counted as the whole network, an upper bound
            ("teacher fine-tuning", "teacher", "forward+backward", seeds * config.finetune_epochs * train),
            ("teacher logits on the training views", "teacher", "forward", seeds * views * train)]
    if "finetune" in config.regimes:
        rows.append(("fine-tuning regime (students)", "student", "forward+backward", networks * config.finetune_epochs * train))
    rows += [("occluded views of the sweeps", "teacher", "forward", round(seeds * occluded * views * train)),
             ("occluded views of the sweeps", "student", "forward", round(seeds * occluded * views * train)),
             ("SHAP maps", "student", "forward+backward", explained)]
    table = pd.DataFrame(rows, columns=["stage", "network", "pass", "images"])
    uncached = 2 * seeds * config.max_epochs * train  # TL and TL+KD, every epoch
    thesis = pd.DataFrame([("thesis recipe without caches, for comparison", "teacher", "forward", uncached),
                           ("thesis recipe without caches, for comparison", "student", "forward+backward", uncached)],
                          columns=table.columns)
    return pd.concat([table, thesis], ignore_index=True)


def estimated_seconds(counts: pd.DataFrame, rates: dict[str, float]) -> pd.DataFrame:
    """``counts`` (:func:`pass_counts`) with ``seconds`` = images / measured rate; ``rates`` maps
    ``"<network> <pass>"`` (e.g. ``"teacher forward"``) to images per second."""
    missing = {f"{n} {p}" for n, p in zip(counts.network, counts["pass"], strict=True)} - set(rates)
    if missing:
        raise ValueError(f"no measured rate for {sorted(missing)}")
    seconds = [images / rates[f"{n} {p}"] for n, p, images in zip(counts.network, counts["pass"], counts.images, strict=True)]
    return counts.assign(seconds=seconds)
