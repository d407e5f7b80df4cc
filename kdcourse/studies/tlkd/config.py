"""The TL+KD study's configuration: the teacher–student pairs, the regimes, arms and sweeps, the
profiles, and the data and pretrained networks a configuration names."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from kdcourse import data as kd_data
from kdcourse.backbones import Backbone, backbone
from kdcourse.kd.hinton import check_alpha, check_temperature
from kdcourse.studies.common import check_seeds, config_key, with_overrides
from kdcourse.transfer import ALL_VIEWS

__all__ = [
    "Pair", "PAIRS", "VIEW_CODES", "CLASSES", "REGIMES", "SWEEPS", "ARMS", "ARM_LABELS", "CENTER_BLACK_RANGE",
    "TlkdConfig", "PROFILES", "config_for", "check", "teacher_roles", "load_backbones", "load_data", "cifar_for",
    "resize_images", "resized", "at_size",
]


@dataclass(frozen=True)
class Pair:
    """A teacher and a student for one data set. The teacher is trained as the MHIST chapter trains its
    networks (``"two_phase"``: a head on frozen features, then the last stage), or is the MHIST chapter's
    ensemble (``"ensemble"``: each network of ``members``, the first being ``teacher``, trained in two
    phases, their logits averaged), or is fine-tuned whole like the students of the fine-tuning regime
    (``"fine_tune"``: a head, then every layer; any timm network), or is trained from scratch on the
    data's own 32-px images with the airbench94 recipe (``"airbench"``: :mod:`kdcourse.cifar_teacher`;
    ``teacher`` is then ``"airbench"``, not a timm name)."""

    dataset: str
    teacher: str
    student: str
    teacher_recipe: str
    members: tuple[str, ...] = ()

    @property
    def pretrained_teacher(self) -> bool:
        """Whether the teacher starts from ImageNet weights of timm networks (every recipe but ``"airbench"``)."""
        return self.teacher_recipe != "airbench"

    def teacher_networks(self) -> tuple[str, ...]:
        """The networks the teacher is made of: the ensemble's members, or the teacher alone."""
        return self.members or (self.teacher,)


PAIRS: dict[str, Pair] = {
    "mhist_offline": Pair("mhist", "mobilenetv2_100.tflite_in1k", "mobilenetv1_025.tflite_in1k", "ensemble",
                          ("mobilenetv2_100.tflite_in1k", "mobilenetv1_075.tflite_in1k", "mobilenetv1_050.tflite_in1k")),
    # the thesis's pair; timm's releases of torchvision's ResNet-18 and an ImageNet-1k-only ViT-B/16
    "cifar10_thesis": Pair("cifar10", "vit_base_patch16_224.augreg_in1k", "resnet18.tv_in1k", "fine_tune"),
    # the recorded CIFAR-10 study on a CPU: a network trained from scratch at 32 px teaches an ImageNet MobileNet
    "cifar10_cpu": Pair("cifar10", "airbench", "mobilenetv1_025.tflite_in1k", "airbench"),
    "cifar10_tiny": Pair("cifar10", "convnext_atto", "resnet10t", "fine_tune"),  # tests: small networks, random weights
}
VIEW_CODES = {"mhist": ALL_VIEWS, "cifar10": (0, 4)}  # histology: 8 symmetries; photographs: random horizontal flips
CLASSES = {"mhist": kd_data.MHIST_CLASSES, "cifar10": kd_data.CIFAR10_CLASSES}
REGIMES = ("thesis", "finetune")
SWEEPS = ("fraction", "label_noise", "center_black", "quarter_black")
ARMS = ("tl", "tlkd_thesis", "tlkd_chosen")
ARM_LABELS = {"tl": "TL only", "tlkd_thesis": "TL+KD, thesis (T = 10, α = 0.1)", "tlkd_chosen": "TL+KD, (T, α) chosen on validation"}
CENTER_BLACK_RANGE = (200, 224)  # the thesis's CenterBlack side on 224-px images, scaled to the images as loaded


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
    # regimes that search the (T, α) grid on validation; the others train TL+KD at the first such regime's choice
    grid_regimes: tuple[str, ...] = REGIMES
    # the airbench teacher (pair "cifar10_cpu"): epochs, batch size, and the sweeps whose teacher is trained
    # again on the sweep's own training set (fewer images, noisy labels), so that it knows no more than the student
    teacher_epochs: int = 10
    teacher_batch_size: int = 1024
    retrained_sweeps: tuple[str, ...] = ()

    def key(self) -> str:
        """Short hash of the configuration, naming its checkpoint folder (the fields added with the airbench teacher
        count only where they differ from their defaults, so the MHIST runs recorded before keep their folder)."""
        return config_key(self, added=("grid_regimes", "teacher_epochs", "teacher_batch_size", "retrained_sweeps"))

    @property
    def dataset(self) -> str:
        return PAIRS[self.pair].dataset


PROFILES: dict[str, TlkdConfig] = {
    "smoke": TlkdConfig(pair="cifar10_cpu", seeds=(0, 7), size=48, limit=160, val_size=40, pretrained=False,
                        data="generated", batch_size=16, head_epochs=2, finetune_epochs=1, max_epochs=3,
                        teacher_epochs=2, teacher_batch_size=32, retrained_sweeps=("fraction", "label_noise"),
                        grid_regimes=("thesis",), temperatures=(10.0,), alphas=(0.1, 0.5),
                        sweeps=(("fraction", (0.5,)), ("label_noise", (0.2,)), ("center_black", (0.5,)), ("quarter_black", (0.5,))),
                        thresholds=(0.1, 0.2)),
    # the recorded CIFAR-10 run, on a CPU: students at 96 px (see the chapter for why), the grid searched in the
    # thesis regime only, the fine-tuning regime at the budget that fits
    "full": TlkdConfig(pair="cifar10_cpu", size=96, head_epochs=10, finetune_epochs=4, grid_regimes=("thesis",),
                       retrained_sweeps=("fraction", "label_noise"), thresholds=(0.6, 0.7, 0.8)),
    "thesis": TlkdConfig(pair="cifar10_thesis", size=224, thresholds=(0.8, 0.85, 0.9)),  # a GPU machine with the network
    "mhist": TlkdConfig(),  # the recorded run: MHIST with the offline weights, on a CPU
}


def config_for(profile: str, **overrides: object) -> TlkdConfig:
    """The configuration of ``profile`` (``smoke``, ``full``, ``thesis`` or ``mhist``) with ``overrides``; None values are ignored."""
    return with_overrides(PROFILES[profile], **overrides)


def check(config: TlkdConfig) -> None:
    """Raises ValueError naming the first impossible setting of ``config``."""
    if config.pair not in PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAIRS)}, got {config.pair!r}")
    check_seeds(config.seeds)
    for name in ("batch_size", "head_epochs", "finetune_epochs", "max_epochs", "plateau_patience", "early_stopping_patience",
                 "teacher_epochs", "teacher_batch_size"):
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
    if not set(config.grid_regimes) & set(config.regimes):
        raise ValueError(f"grid_regimes must name at least one of the run's regimes {config.regimes}, got {config.grid_regimes}")
    if unknown := set(config.retrained_sweeps) - set(SWEEPS):
        raise ValueError(f"retrained_sweeps must be among {SWEEPS}, got {sorted(unknown)}")
    if config.retrained_sweeps and PAIRS[config.pair].pretrained_teacher:
        raise ValueError("retrained_sweeps needs the airbench teacher (pair 'cifar10_cpu'): training a pretrained teacher "
                         "again for every sweep level is not part of this study; set retrained_sweeps=()")
    if set(config.retrained_sweeps) & {"center_black", "quarter_black"}:
        raise ValueError("the occlusion sweeps keep the clean teacher, which sees the same occluded images as the student; "
                         "retrained_sweeps takes 'fraction' and 'label_noise'")
    if config.data not in ("real", "generated"):
        raise ValueError(f"data must be 'real' or 'generated', got {config.data!r}")


def teacher_roles(pair: Pair) -> dict[str, str]:
    """Role name → timm network of the teacher's pretrained networks: ``"teacher"``, or ``"member0"``, ``"member1"``…
    of an ensemble; none for a teacher trained from scratch (``"airbench"``)."""
    if not pair.pretrained_teacher:
        return {}
    if not pair.members:
        return {"teacher": pair.teacher}
    return {f"member{index}": name for index, name in enumerate(pair.members)}


def load_backbones(config: TlkdConfig) -> dict[str, Backbone]:
    """The teacher's networks (:func:`teacher_roles`) and the ``"student"`` of ``config.pair`` (pretrained
    unless ``config.pretrained`` is false; random weights are drawn under a fixed seed). Raises
    :class:`kdcourse.backbones.MissingWeightsError`."""
    pair = PAIRS[config.pair]
    classes = len(CLASSES[pair.dataset])
    roles = teacher_roles(pair) | {"student": pair.student}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return {role: backbone(name, classes, weights="imagenet" if config.pretrained else None)
                for role, name in roles.items()}


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images ``(N, 3, H, W)`` resized to ``size`` px (bilinear, antialiased), in chunks to bound the memory;
    ``x`` itself when it already has that side."""
    if x.shape[-1] == size:
        return x
    return torch.cat([torch.nn.functional.interpolate(x[i : i + 2048].float(), size=(size, size), mode="bilinear",
                                                      antialias=True, align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                      for i in range(0, len(x), 2048)])


def resized(split: kd_data.ImageSplit, size: int) -> kd_data.ImageSplit:
    """``split`` with its uint8 images resized once to ``size`` px (:func:`resize_images`)."""
    if split.x.shape[-1] == size:
        return split
    return dataclasses.replace(split, x=resize_images(split.x, size))


def load_data(config: TlkdConfig, root: str | Path | None = None, *, download: bool = True,
              ) -> kd_data.ImageData:
    """The data set of ``config``: MHIST (:func:`kdcourse.data.load_mhist`) at ``config.size`` px, or CIFAR-10
    (:func:`kdcourse.data.load_cifar10`: the release, or an image-folder copy, or the release downloaded where
    the network allows and ``download`` is true; its ``source`` says which) at its own 32 px: :func:`run_study`
    resizes the images once for the pretrained networks (:func:`at_size`), and a teacher trained from scratch
    sees them as they are. Raises :class:`kdcourse.data.MissingDataError` naming what is missing."""
    if config.dataset == "mhist":
        return kd_data.load_mhist(root, size=config.size, limit=config.limit)
    cifar = kd_data.load_cifar10(root, val_size=config.val_size, download=download)
    train = cifar.train if config.limit is None else cifar.train.subset(
        kd_data.stratified_split(cifar.train.y, min(config.limit, len(cifar.train) - 1), 0)[1])
    return dataclasses.replace(cifar, train=train)


def at_size(dataset: kd_data.ImageData, size: int) -> kd_data.ImageData:
    """``dataset`` with every split's uint8 images at ``size`` px (:func:`resized`; itself when they already are)."""
    if dataset.train.x.shape[-1] == size:
        return dataset
    return dataclasses.replace(dataset, train=resized(dataset.train, size), val=resized(dataset.val, size),
                               test=resized(dataset.test, size))


def cifar_for(config: TlkdConfig, *, generated: bool) -> tuple[kd_data.ImageData, str]:
    """CIFAR-10 for ``config`` (:func:`load_data`) and its source: the real data, or with ``generated`` a
    small set written in CIFAR-10's file format to a new temporary folder (source ``"generated"``)."""
    if not generated:
        cifar = load_data(config)
        return cifar, cifar.source
    folder = kd_data.write_generated_cifar10(tempfile.mkdtemp(prefix="cifar-generated-"))
    return load_data(config, folder, download=False), "generated"
