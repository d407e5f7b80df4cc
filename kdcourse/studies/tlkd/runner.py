"""The TL+KD study's runner: the teacher, the students of both regimes and every arm, the
robustness sweeps, and the record a result file keeps."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from kdcourse import checkpoints, corruptions, hardware, metrics, paths
from kdcourse import data as kd_data
from kdcourse.backbones import backbone, pooled_head, set_trainable, split_at
from kdcourse.cifar_teacher import AirbenchRecipe, train_cifar_teacher
from kdcourse.kd.ensemble import Ensemble, average_logits
from kdcourse.kd.hinton import HintonKD
from kdcourse.kd.method import CrossEntropy, Method
from kdcourse.studies.common import json_records
from kdcourse.studies.tlkd.config import (
    CENTER_BLACK_RANGE,
    CLASSES,
    PAIRS,
    VIEW_CODES,
    TlkdConfig,
    at_size,
    check,
    load_backbones,
    resize_images,
    teacher_roles,
)
from kdcourse.train import FitResult, fit, predict_logits
from kdcourse.transfer import (
    TwoPhaseRunner,
    TwoPhaseSettings,
    ViewBatches,
    apply_in_batches,
    dihedral_view,
    role_views,
)

__all__ = ["OnImages", "PreLogits", "OneView", "STAGES", "TlkdOutcome", "run_study", "outcome_record"]

STAGES = ("teacher", "cached features", "thesis regime", "fine-tuning regime", "sweep teachers", "occluded views",
          "sweep students")  # the stages of a run whose computing time the record keeps


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


class OneView(nn.Module):
    """A network's logits of exactly the view it is given: an :class:`~kdcourse.models.AirbenchNet` without its
    test-time mirror views (what a student seeing that one view distils from)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network.logits(x)


@dataclass
class TlkdOutcome:
    """What :func:`run_study` measured.

    ``runs``: one row per (regime, arm, seed): ``val_accuracy``, test ``accuracy``, macro ``precision``,
    ``recall``, ``f1``, ``auc`` (two classes only, else NaN), ``best_epoch``, ``epochs`` (run),
    ``train_seconds``. ``confusion``: per regime, arm and seed the test confusion matrix (rows: true
    class). ``history``: one row per (regime, arm, seed, epoch) with ``val_accuracy`` (the fine-tuning
    regime counts the head's epochs first). ``grid``: per (regime, seed, T, α) ``val_accuracy``;
    ``chosen``: per regime the (T, α) of the best mean (a regime outside ``grid_regimes`` takes the first
    grid regime's). ``sweeps``: per (sweep, level, arm, seed) the test ``accuracy`` and ``f1`` and
    ``val_accuracy`` (``tlkd_chosen`` only where the thesis regime chose another (T, α) than the thesis's),
    and the sweep teacher's test ``teacher_accuracy`` (a teacher trained again on the sweep's training set
    for ``retrained_sweeps``, else the seed's teacher). ``teachers``: per seed the teacher's test scores,
    ``val_accuracy``, ``best_epoch`` and ``train_seconds``. ``stage_seconds``: the computing time of each stage
    of the study (:data:`STAGES`), summed from the training time that every fit and cache keeps, so that a run
    resumed from checkpoints still reports what the whole run cost; ``cache_seconds`` and ``sweep_seconds`` are
    the wall time of this call's caches and sweeps.
    ``models``: the networks per regime, arm and seed (on normalised images), for explanations;
    ``teacher_models``: the teacher of each seed (on normalised images as the teacher sees them: the data's
    own size for a teacher from scratch). ``source``: which copy of the data was read (its loader's ``source``).
    ``folder``: the run's checkpoint folder, where analyses of its networks keep their caches too.
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
    source: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    models: dict[str, dict[str, dict[int, nn.Module]]] = field(default_factory=dict)
    teacher_models: dict[int, nn.Module] = field(default_factory=dict)
    folder: Path | None = None


def _scores(logits: Tensor, labels: Tensor) -> dict[str, float]:
    scores = metrics.classification_scores(logits, labels)
    auc = metrics.roc_auc(logits, labels) if logits.shape[1] == 2 else np.nan
    return {"accuracy": scores["accuracy"], "precision": scores["precision"], "recall": scores["recall"],
            "f1": scores["f1"], "auc": auc}


class _Study:
    """The networks of one run: cached views, the teachers, and the students of both regimes."""

    def __init__(self, config: TlkdConfig, dataset: kd_data.ImageData, folder: Path,
                 device: torch.device) -> None:
        self.config, self.folder, self.device = config, folder, device
        self.native = dataset  # as loaded: what a teacher trained from scratch sees
        self.dataset = at_size(dataset, config.size)  # what the pretrained networks see
        self.amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
        self.pair = PAIRS[config.pair]
        self.codes = VIEW_CODES[self.pair.dataset]
        self.classes = len(CLASSES[self.pair.dataset])
        self.nets = load_backbones(config)  # fails first, and clearly, when pretrained weights are missing
        start = time.perf_counter()
        self.views = {role: role_views(role, net, self.dataset, config.split_reduction, folder.parent / "cache", device,
                                       self.amp, self.codes)
                      for role, net in self.nets.items()}
        self.cache_seconds = time.perf_counter() - start
        self.teacher_roles = teacher_roles(self.pair)
        if self.teacher_roles:
            first = self.nets[next(iter(self.teacher_roles))]
            self.teacher_normalisation = (first.mean, first.std)  # the members of an ensemble share it (checked)
        else:
            self.teacher_normalisation = (dataset.mean, dataset.std)  # a teacher from scratch: the data's own statistics
        if any((net.mean, net.std) != self.teacher_normalisation for role, net in self.nets.items() if role != "student"):
            raise ValueError("the members of an ensemble teacher must take the same input normalisation")
        names = {role: net.name for role, net in self.nets.items()}
        # the MHIST chapter selects its teacher on AUC
        settings = TwoPhaseSettings.from_config(config, names, val_metric="auc" if self.classes == 2 else "accuracy")
        self.teacher_runner = TwoPhaseRunner(settings, self.dataset, self.views, folder, device, self.amp)
        self.features = {"student": PreLogits(self.nets["student"].model).eval()}  # the frozen pretrained student

    def _logits(self, module: nn.Module, inputs: Tensor) -> Tensor:
        return apply_in_batches(module, inputs, batch_size=256, device=self.device, amp_dtype=self.amp)

    def teacher(self, seed: int) -> tuple[nn.Module, Tensor, dict[str, float]]:
        """The teacher of ``seed``: its network (normalised images → logits), its logits on every training view
        ``(V, N, K)`` and its test scores, with its ``val_accuracy``, ``best_epoch`` and ``train_seconds``."""
        if self.pair.teacher_recipe == "airbench":
            network, train_logits, scores = self.airbench(seed, "teacher", self.native.train)
            return network, train_logits, scores
        if self.pair.teacher_recipe in ("two_phase", "ensemble"):
            members, fits = [], []
            for role in self.teacher_roles:
                trained = self.teacher_runner.two_phase(role, seed, role, keep_train_logits=True)
                trunk, _ = split_at(self.nets[role].model, self.config.split_reduction)
                members.append((nn.Sequential(trunk, trained.top), trained.train_logits, trained.test_logits))
                fits += [trained.head_fit, trained.fit]
            network = members[0][0] if len(members) == 1 else Ensemble([m[0] for m in members])
            train_logits = average_logits([m[1] for m in members])
            test_logits = average_logits([m[2] for m in members])
            trained_for = {"val_accuracy": np.nan, "best_epoch": np.nan,
                           "train_seconds": sum(f.train_seconds for f in fits)}  # members are selected on their own
        else:
            network, test_logits, _, result = self._fine_tuned("teacher", seed, "teacher", CrossEntropy(), None)
            on_images = OnImages(network, *self.teacher_normalisation)
            train_logits = torch.stack([predict_logits(on_images, self._image_batches(view), device=self.device, amp_dtype=self.amp)
                                        for view in self.image_views])
            trained_for = {"val_accuracy": result.best_val_score, "best_epoch": result.best_epoch,
                           "train_seconds": result.train_seconds}
        return network.eval(), train_logits, _scores(test_logits, self.dataset.test.y) | trained_for

    def airbench(self, seed: int, name: str, train: kd_data.ImageSplit, logits_of: Tensor | None = None,
                 epochs: int | None = None) -> tuple[nn.Module, Tensor, dict[str, float]]:
        """An :class:`~kdcourse.models.AirbenchNet` trained from scratch on ``train`` (the data's own images, a
        subset or relabelled copy of them) for ``epochs`` (default ``config.teacher_epochs``) with
        :func:`kdcourse.cifar_teacher.train_cifar_teacher`, selected on the validation split; returns it (with
        its test-time views), its one-view logits ``(V, n, K)`` on every view of the uint8 images ``logits_of``
        (default: the whole training split; computed once and read back from a file, so that a resumed run
        distils from the very same numbers) and its test scores (as :meth:`teacher`, with the accuracy of one
        view, ``one_view_accuracy``)."""
        config = self.config
        data = dataclasses.replace(self.native, train=train)
        model, result = train_cifar_teacher(data, seed=seed, epochs=epochs or config.teacher_epochs, device=self.device,
                                            amp_dtype=self.amp, checkpoint=self.folder / f"seed{seed}_{name}.ckpt",
                                            recipe=AirbenchRecipe(batch_size=config.teacher_batch_size), progress=None)
        model.eval()
        images = self.native.train.x if logits_of is None else logits_of
        key = {"teacher": checkpoints.module_fingerprint(model), "images": checkpoints.tensor_fingerprint(images),
               "views": str(list(self.codes)), "output": "one view"}
        train_logits = checkpoints.cached(self.folder / "logits" / f"seed{seed}_{name}.pt", key,
                                          lambda: self._on_native(OneView(model), images))
        test_logits, one_view = (apply_in_batches(OnImages(module, *self.teacher_normalisation), self.native.test.x,
                                                  batch_size=500, device=self.device, amp_dtype=self.amp)
                                 for module in (model, OneView(model)))
        trained_for = {"val_accuracy": result.best_val_score, "best_epoch": result.best_epoch,
                       "train_seconds": result.train_seconds,
                       "one_view_accuracy": metrics.classification_scores(one_view, self.native.test.y)["accuracy"]}
        return model, train_logits, _scores(test_logits, self.native.test.y) | trained_for

    def _on_native(self, teacher: nn.Module, images: Tensor) -> Tensor:
        """``teacher``'s logits ``(V, n, K)`` on every view of uint8 ``images`` as the teacher sees them (the
        native images for a teacher from scratch, else at the study's size)."""
        if self.pair.pretrained_teacher:
            images = resize_images(images, self.config.size)
        on_images = OnImages(teacher, *self.teacher_normalisation)
        return torch.stack([apply_in_batches(on_images, dihedral_view(images, code), batch_size=64 if self.pair.pretrained_teacher
                                             else 500, device=self.device, amp_dtype=self.amp) for code in self.codes])

    def _thesis_head(self, role: str, seed: int, name: str, method: Method, pooled: Tensor, targets: Tensor,
                     soft: Tensor | None = None) -> tuple[nn.Module, FitResult]:
        """A new head on pooled features ``(V, n, D)`` trained with the thesis's recipe."""
        config, views = self.config, self.views[role]
        model = self._fresh_whole(role, seed)
        head = pooled_head(model)
        extras = () if soft is None else (soft,)
        result = fit(head, ViewBatches(pooled, targets, *extras, batch_size=config.batch_size, seed=seed), method,
                     epochs=config.max_epochs, lr=config.sgd_lr, optimizer="sgd", momentum=config.momentum,
                     weight_decay=config.weight_decay, schedule="plateau", plateau_patience=config.plateau_patience,
                     early_stopping_patience=config.early_stopping_patience, val_data=(views.pooled_val, self.dataset.val.y),
                     val_metric="accuracy", seed=seed, device=self.device, amp_dtype=self.amp,
                     checkpoint=self.folder / f"seed{seed}_thesis_{name}.ckpt", description=f"{name} (thesis regime)")
        return head, result

    def student(self, regime: str, seed: int, name: str, method: Method, soft: Tensor | None,
                pooled: Tensor | None = None, targets: Tensor | None = None, subset: Tensor | None = None,
                ) -> tuple[nn.Module, Tensor, list[float], FitResult]:
        """A student of ``regime``; returns its network, test logits, validation accuracy per epoch and fit
        (whose ``best_val_score`` is the validation accuracy of the returned network).

        ``pooled``/``targets``/``subset`` replace the training features, labels and images (the sweeps)."""
        if regime == "finetune":
            return self._fine_tuned("student", seed, name, method, soft)
        views = self.views["student"]
        pooled = views.pooled_train if pooled is None else pooled
        targets = self.dataset.train.y if targets is None else targets
        if subset is not None:
            pooled, targets, soft = pooled[:, subset], targets[subset], None if soft is None else soft[:, subset]
        head, result = self._thesis_head("student", seed, name, method, pooled, targets, soft)
        network = nn.Sequential(self.features["student"], head).eval()
        return network, self._logits(head, views.pooled_test), [h["val_accuracy"] for h in result.history], result

    def _image_batches(self, images: Tensor) -> kd_data.TensorBatches:
        return kd_data.TensorBatches(images, batch_size=4 * self.config.batch_size, shuffle=False)

    def _fine_tuned(self, role: str, seed: int, name: str, method: Method, soft: Tensor | None,
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
                       method, epochs=config.head_epochs, lr=config.head_lr, val_data=(views.pooled_val, self.dataset.val.y),
                       checkpoint=self.folder / f"seed{seed}_finetune_{name}_head.ckpt", description=f"finetune_{name} head",
                       **common)
        set_trainable(model, True)
        network = OnImages(model.to(memory_format=hardware.CONV_MEMORY_FORMAT), net.mean, net.std)
        result = fit(network, ViewBatches(self.image_views, y, *extras, batch_size=config.batch_size, seed=seed), method,
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
        """Student pooled features ``(V, n, D)`` (of its frozen pretrained network, at the study's size) and
        teacher logits ``(V, n, K)`` on every view of uint8 ``images`` (as loaded), computed batch by batch."""
        student = OnImages(self.features["student"], self.nets["student"].mean, self.nets["student"].std)
        at_study_size = resize_images(images, self.config.size)
        pooled = torch.stack([apply_in_batches(student, dihedral_view(at_study_size, code), batch_size=64, device=self.device,
                                               amp_dtype=self.amp) for code in self.codes])
        one_view = OneView(teacher) if not self.pair.pretrained_teacher else teacher
        return pooled, self._on_native(one_view, images)


REGIME_STAGES = {"thesis": "thesis regime", "finetune": "fine-tuning regime"}
# a teacher retrained on a fraction f of the images trains 1/f times the epochs, at most this many times the
# full teacher's (the budget of a CPU): at f = 0.5 as many optimiser steps as the full teacher, below it fewer,
# but not the handful that the recipe's large batches would leave a small fraction in its usual epochs
FRACTION_EPOCHS_CAP = 2


def _grid_name(temperature: float, alpha: float) -> str:
    return f"kd_T{temperature:g}_a{alpha:g}"


@dataclass
class SweepTraining:
    """The training inputs of one sweep level (None keeps the clean value): the student's ``pooled`` features
    ``(V, N, D)``, the ``targets`` ``(N,)``, the teacher's ``soft`` logits ``(V, N, K)``, the ``subset`` of
    training images kept, and the test accuracy of the level's teacher with its training time (zero when
    the seed's teacher is reused), and the seconds of computing the occluded views (zero without occlusion)."""

    pooled: Tensor | None = None
    targets: Tensor | None = None
    soft: Tensor | None = None
    subset: Tensor | None = None
    teacher_accuracy: float = np.nan
    teacher_seconds: float = 0.0
    occluded_seconds: float = 0.0


def _sweep_training(study: _Study, teacher: nn.Module, teacher_logits: Tensor, sweep: str, level: float, seed: int,
                    stream: int) -> SweepTraining:
    """The training inputs of one sweep level. Every corruption is applied to the images as loaded. A sweep
    in ``retrained_sweeps`` trains its own teacher on the same fewer images or noisy labels; the others keep
    the seed's ``teacher``, which sees the same occluded images as the student."""
    config, train = study.config, study.native.train
    generator = torch.Generator().manual_seed(seed * 1_000 + stream)
    retrain = sweep in config.retrained_sweeps
    name = f"teacher_{sweep}{level:g}"
    if sweep == "fraction":
        subset = corruptions.training_fraction(train.y, level, seed)
        if not retrain:
            return SweepTraining(subset=subset)
        epochs = min(round(config.teacher_epochs / level), FRACTION_EPOCHS_CAP * config.teacher_epochs)
        _, logits, scores = study.airbench(seed, name, train.subset(subset), logits_of=train.x[subset], epochs=epochs)
        soft = teacher_logits.clone()
        soft[:, subset] = logits  # the rows outside the subset are never read
        return SweepTraining(soft=soft, subset=subset, teacher_accuracy=scores["accuracy"], teacher_seconds=scores["train_seconds"])
    if sweep == "label_noise":
        noisy = corruptions.noisy_labels(train.y, level, study.classes, generator)[0]
        if not retrain:
            return SweepTraining(targets=noisy)
        _, soft, scores = study.airbench(seed, name, dataclasses.replace(train, y=noisy))
        return SweepTraining(targets=noisy, soft=soft, teacher_accuracy=scores["accuracy"], teacher_seconds=scores["train_seconds"])
    native = train.x.shape[-1]
    if sweep == "center_black":
        low = round(CENTER_BLACK_RANGE[0] / CENTER_BLACK_RANGE[1] * native)
        occlusion = lambda x, g: corruptions.center_black(x, g, low=low, high=native)  # noqa: E731
    else:
        occlusion = corruptions.quarter_black
    images, chosen = corruptions.corrupt_fraction(train.x, level, occlusion, generator)
    pooled, soft = study.views["student"].pooled_train.clone(), teacher_logits.clone()
    if len(chosen):  # computed once, then read back (a resumed or re-rendered run does not pay for it again)
        occluded = images[chosen]
        key = {"teacher": checkpoints.module_fingerprint(teacher), "images": checkpoints.tensor_fingerprint(occluded),
               "student": checkpoints.module_fingerprint(study.features["student"])}
        if not study.pair.pretrained_teacher:
            key["output"] = "one view"
        values, seconds = checkpoints.cached(
            study.folder / "occluded" / f"seed{seed}_{sweep}{level:g}.pt", key,
            lambda: dict(zip(("pooled", "soft"), study.occluded(teacher, occluded), strict=True)), with_seconds=True)
        pooled[:, chosen], soft[:, chosen] = values["pooled"], values["soft"]
        return SweepTraining(pooled=pooled, soft=soft, occluded_seconds=seconds)
    return SweepTraining(pooled=pooled, soft=soft)


def run_study(config: TlkdConfig, dataset: kd_data.ImageData, *, run_root: Path | None = None,
              device: str | torch.device | None = None) -> TlkdOutcome:
    """Train and evaluate every arm, regime and sweep level for every seed (checkpointed: a rerun resumes).

    ``dataset`` comes from :func:`load_data` with the same ``config``."""
    check(config)
    if "fraction" in config.retrained_sweeps and (levels := dict(config.sweeps).get("fraction")):
        smallest = round(min(levels) * len(dataset.train))
        if smallest < config.teacher_batch_size:
            raise ValueError(f"the fraction sweep's smallest level keeps {smallest} training images, fewer than one of the "
                             f"teacher's batches ({config.teacher_batch_size}): its retrained teacher could not take a "
                             "step; lower teacher_batch_size or raise the level")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = (run_root or paths.runs_dir()) / "tlkd" / config.key()
    study = _Study(config, dataset, folder, device)
    labels = dataset.test.y
    runs, history, grid_rows, sweep_rows, teacher_rows = [], [], [], [], []
    confusion: dict[str, dict[str, dict[int, list[list[int]]]]] = {}
    models: dict[str, dict[str, dict[int, nn.Module]]] = {}
    teachers: dict[int, tuple[nn.Module, Tensor]] = {}
    trained: dict[tuple[str, int, str], tuple[nn.Module, Tensor, list[float], FitResult]] = {}
    stages = dict.fromkeys(STAGES, 0.0)
    stages["cached features"] = float(sum(views.seconds for views in study.views.values()))  # NaN: a cache of unknown cost

    def student(regime: str, seed: int, name: str, method: Method, soft: Tensor | None,
                ) -> tuple[nn.Module, Tensor, list[float], FitResult]:
        outcome = study.student(regime, seed, name, method, soft)
        stages[REGIME_STAGES[regime]] += outcome[3].train_seconds
        return outcome

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
    grid_regimes = [regime for regime in config.regimes if regime in config.grid_regimes]
    for seed in config.seeds:
        teacher, teacher_logits, teacher_scores = study.teacher(seed)
        teachers[seed] = (teacher, teacher_logits)
        teacher_rows.append({"seed": seed, **teacher_scores})
        stages["teacher"] += teacher_scores["train_seconds"]
        for regime in grid_regimes:
            trained[(regime, seed, "tl")] = student(regime, seed, "tl", CrossEntropy(), None)
            for temperature, alpha in points:
                outcome = student(regime, seed, _grid_name(temperature, alpha), HintonKD(temperature, alpha), teacher_logits)
                trained[(regime, seed, _grid_name(temperature, alpha))] = outcome
                grid_rows.append({"regime": regime, "seed": seed, "temperature": temperature, "alpha": alpha,
                                  "val_accuracy": outcome[3].best_val_score, "train_seconds": outcome[3].train_seconds})
    grid = pd.DataFrame(grid_rows)
    chosen: dict[str, dict[str, float]] = {}
    for regime in grid_regimes:
        means = grid[grid.regime == regime].groupby(["temperature", "alpha"])["val_accuracy"].mean()
        chosen[regime] = {"temperature": float(means.idxmax()[0]), "alpha": float(means.idxmax()[1])}
    for regime in config.regimes:  # a regime without its own grid trains at the first grid regime's choice
        chosen.setdefault(regime, chosen[grid_regimes[0]])
        best = (chosen[regime]["temperature"], chosen[regime]["alpha"])
        for seed in config.seeds:
            if regime not in grid_regimes:
                trained[(regime, seed, "tl")] = student(regime, seed, "tl", CrossEntropy(), None)
                for point in dict.fromkeys((tuple(config.thesis_kd), best)):
                    trained[(regime, seed, _grid_name(*point))] = student(regime, seed, _grid_name(*point), HintonKD(*point),
                                                                          teachers[seed][1])
            keep(regime, "tl", seed, trained[(regime, seed, "tl")])
            keep(regime, "tlkd_thesis", seed, trained[(regime, seed, _grid_name(*config.thesis_kd))])
            keep(regime, "tlkd_chosen", seed, trained[(regime, seed, _grid_name(*best))])

    study.__dict__.pop("image_views", None)  # the images of every view (GBs) are not needed by the sweeps
    start = time.perf_counter()
    kd_points = {"tlkd_thesis": tuple(config.thesis_kd)}
    if config.sweeps and (best := (chosen["thesis"]["temperature"], chosen["thesis"]["alpha"])) != kd_points["tlkd_thesis"]:
        kd_points["tlkd_chosen"] = best  # only when validation chose another (T, α) than the thesis's
    for seed in config.seeds:
        teacher, teacher_logits = teachers[seed]
        for stream, (sweep, levels) in enumerate(config.sweeps):
            for index, level in enumerate(levels):
                inputs = _sweep_training(study, teacher, teacher_logits, sweep, level, seed, 100 * stream + index)
                stages["sweep teachers"] += inputs.teacher_seconds
                stages["occluded views"] += inputs.occluded_seconds
                soft = teacher_logits if inputs.soft is None else inputs.soft
                teacher_accuracy = teacher_rows[config.seeds.index(seed)]["accuracy"] if np.isnan(inputs.teacher_accuracy) \
                    else inputs.teacher_accuracy
                arms = {"tl": (CrossEntropy(), None)} | {arm: (HintonKD(t, a), soft) for arm, (t, a) in kd_points.items()}
                for arm, (method, extra) in arms.items():
                    name = f"{sweep}{level:g}_{arm if arm == 'tl' else _grid_name(*kd_points[arm])}"
                    _, logits, _, result = study.student("thesis", seed, name, method, extra, inputs.pooled, inputs.targets,
                                                         inputs.subset)
                    stages["sweep students"] += result.train_seconds
                    scores = _scores(logits, labels)
                    sweep_rows.append({"sweep": sweep, "level": level, "arm": arm, "seed": seed, "val_accuracy": result.best_val_score,
                                       "accuracy": scores["accuracy"], "f1": scores["f1"], "teacher_accuracy": teacher_accuracy})
    counts = {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}
    return TlkdOutcome(config, pd.DataFrame(runs), confusion, pd.DataFrame(history), grid, chosen, pd.DataFrame(sweep_rows),
                       pd.DataFrame(teacher_rows), counts, {role: net.weights for role, net in study.nets.items()},
                       study.cache_seconds, time.perf_counter() - start, dataset.source, stages, models,
                       {seed: network for seed, (network, _) in teachers.items()}, folder)


def outcome_record(outcome: TlkdOutcome) -> dict:
    """The JSON-ready findings of a run (what a result file keeps; the networks are left out)."""
    config = {key: list(value) if isinstance(value, tuple) else value for key, value in vars(outcome.config).items()}
    config["sweeps"] = [[sweep, list(levels)] for sweep, levels in outcome.config.sweeps]
    return {
        "config": config, "source": outcome.source, "classes": list(CLASSES[outcome.config.dataset]),
        "data_counts": outcome.data_counts, "weights": outcome.weights, "chosen": outcome.chosen,
        "runs": json_records(outcome.runs), "history": json_records(outcome.history), "grid": json_records(outcome.grid),
        "sweeps": json_records(outcome.sweeps), "teachers": json_records(outcome.teachers),
        "confusion": {regime: {arm: {str(seed): matrix for seed, matrix in by_seed.items()} for arm, by_seed in arms.items()}
                      for regime, arms in outcome.confusion.items()},
        "cache_seconds": round(outcome.cache_seconds, 1), "sweep_seconds": round(outcome.sweep_seconds, 1),
        # None: a stage read back from caches written before they kept their seconds
        "stage_seconds": {stage: None if np.isnan(seconds) else round(seconds, 1) for stage, seconds in outcome.stage_seconds.items()},
        "train_seconds": round(float(outcome.runs.train_seconds.sum()), 1),
    }
