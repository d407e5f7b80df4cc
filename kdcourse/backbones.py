"""ImageNet backbones from timm with a new head, their weights, their input normalisation, and freezing.

:func:`backbone` builds any timm model by name with ``num_classes`` outputs and loads its weights
from exactly one of three places, never falling back to another:

- ``weights="imagenet"``: the model's pretrained weights through timm (the Hugging Face cache, or a
  download where the network allows); for the offline models of :data:`OFFLINE_MODELS` the
  converted file in the weights folder (``weights_dir`` or ``$KDCOURSE_WEIGHTS``);
- ``weights=<path>``: a local state-dict file (``.pth``/``.pt``/``.bin``/``.safetensors``);
- ``weights=None``: random initialisation, asked for explicitly.

Missing weights raise :class:`MissingWeightsError`, which names what was looked for and how to
provide it offline; an offline file whose sha256 differs from its entry in :data:`OFFLINE_MODELS`
raises :class:`WeightsChecksumError` (a file is hashed once per path, size and modification time). The input normalisation comes from the weights' own configuration
(``timm.data.resolve_model_data_config``), so the TensorFlow-converted offline weights get their
``[-1, 1]`` scaling and timm weights their ImageNet mean and std.

For transfer learning :func:`split_at` cuts a backbone into a frozen *trunk* (stem and early
stages) and a trainable *top* (later stages, head), so that the trunk's outputs can be computed
once (:mod:`kdcourse.transfer`); :func:`freeze_batchnorm` turns BatchNorm layers into frozen ones
that ``model.train()`` cannot switch back to batch statistics.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "WEIGHTS_ENV",
    "MissingWeightsError",
    "WeightsChecksumError",
    "OfflineModel",
    "OFFLINE_MODELS",
    "Backbone",
    "backbone",
    "weights_dir",
    "freeze_batchnorm",
    "reset_head",
    "set_trainable",
    "split_at",
    "splittable",
    "Trunk",
    "Top",
    "pooled_head",
]

WEIGHTS_ENV = "KDCOURSE_WEIGHTS"
# TensorFlow Lite models take RGB as (x_uint8 − 128) / 128: mean = std = 128/255 in [0, 1] units
TFLITE_NORMALISATION = ((128 / 255,) * 3, (128 / 255,) * 3)
IMAGENET_CLASSES = 1000  # classes of every pretrained head here (the offline files dropped TFLite's background class)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not available; the message says how to provide them."""


class WeightsChecksumError(MissingWeightsError):
    """An offline weights file is not the one its sha256 names (damaged, truncated or another file)."""


# sha256 of the offline files hashed in this process, by (resolved path, size in bytes, mtime in ns)
_hashed: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, hashed again only when its path, size or mtime changed."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hashed:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _hashed[key] = digest.hexdigest()
    return _hashed[key]


def _check_sha256(path: Path, name: str, offline: OfflineModel) -> None:
    """Raise :class:`WeightsChecksumError` naming ``path`` and the fix unless its sha256 is ``offline.sha256``."""
    actual = _sha256(path)
    if actual != offline.sha256:
        raise WeightsChecksumError(
            f"the weights file {path} has sha256 {actual}, not {offline.sha256} of {name} ({offline.description}): "
            f"it is truncated, damaged or another file. Replace it with an intact copy of {offline.file}."
        )


@dataclass(frozen=True)
class OfflineModel:
    """A backbone whose ImageNet weights are a converted local file rather than a timm release.

    ``build(num_classes)`` returns the untrained timm network (TensorFlow "same" padding);
    ``file`` is the state dict's file name in the weights folder, ``sha256`` its checksum (checked on loading),
    ``resolution`` the side (px) it was trained at; inputs are scaled to [-1, 1]; BatchNorm is folded
    into the convolutions (identity plus bias), so it must stay frozen when fine-tuning.
    """

    build: Callable[[int], nn.Module]
    file: str
    sha256: str
    resolution: int
    description: str


def _mobilenet_v1(width: float) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        # the generator behind timm's mobilenetv1_100; its entry point fixes the width at 1.0
        from timm.models.efficientnet import _gen_mobilenet_v1

        return _gen_mobilenet_v1("mobilenetv1_100", channel_multiplier=width, pretrained=False, pad_type="same",
                                 num_classes=num_classes)

    return build


def _mobilenet_v2(num_classes: int) -> nn.Module:
    import timm

    return timm.create_model("mobilenetv2_100", pretrained=False, pad_type="same", num_classes=num_classes)


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "mobilenetv2_100.tflite_in1k": OfflineModel(
        _mobilenet_v2, "mobilenetv2_100_imagenet_from_tflite_same.pth",
        "14bd1bf84345e3bb5902e4e7619b6b6f41e2b83466708daba95e42a9120fe33e", 224,
        "MobileNetV2 1.0, ImageNet, converted from Google's 8-bit TFLite release"),
    "mobilenetv1_075.tflite_in1k": OfflineModel(
        _mobilenet_v1(0.75), "mobilenetv1_075_imagenet_from_tflite_same.pth",
        "a48a0e90d629708b1cfd5a705b47c96320c7d0b94dc0b7f0ba48a2c5ebb93e75", 192,
        "MobileNetV1 0.75, ImageNet at 192 px, converted from Google's 8-bit TFLite release"),
    "mobilenetv1_050.tflite_in1k": OfflineModel(
        _mobilenet_v1(0.5), "mobilenetv1_050_imagenet_from_tflite_same.pth",
        "0cc6cc61bb11f4efb0dfee99d3964f8b392061203762b183754eadfa22757ac7", 160,
        "MobileNetV1 0.5, ImageNet at 160 px, converted from Google's 8-bit TFLite release"),
    "mobilenetv1_025.tflite_in1k": OfflineModel(
        _mobilenet_v1(0.25), "mobilenetv1_025_imagenet_from_tflite_same.pth",
        "4768713702ad56cc9f9f9a60fa2112a9a01d07da98edeaf480e5927205fc50da", 128,
        "MobileNetV1 0.25, ImageNet at 128 px, converted from Google's 8-bit TFLite release"),
}


@dataclass
class Backbone:
    """A network from :func:`backbone` with what a caller needs to feed it.

    ``model`` returns logits ``(N, num_classes)`` for float images ``(N, 3, H, W)`` normalised with
    ``mean``/``std`` (per channel, [0, 1] units); ``weights`` says where its weights came from
    (``"random"``, a weights file's name without its folder, so that records name no machine's paths, or a
    timm/Hugging Face name); ``pretrained`` is true unless random.
    """

    name: str
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str
    pretrained: bool


def weights_dir(folder: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of offline weight files: ``folder`` if given, else ``$KDCOURSE_WEIGHTS``, else None."""
    if folder is not None:
        return Path(folder).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else None


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise MissingWeightsError(f"the weights file {path} does not exist; pass the path of a saved state dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors report truncated files with several exception types
        raise MissingWeightsError(
            f"cannot read the weights file {path} ({type(error).__name__}: {error}); it is truncated or not a state dict: "
            "replace it with a complete copy"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MissingWeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _load_into(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly, except the classifier when its shape differs (a new head)."""
    classifier = model.pretrained_cfg.get("classifier", "classifier") if hasattr(model, "pretrained_cfg") else "classifier"
    own = model.state_dict()
    differ = [k for k in state if k in own and state[k].shape != own[k].shape]
    dropped = [k for k in differ if k.startswith(classifier + ".")]
    mismatched = [k for k in differ if k not in dropped]
    missing = [k for k in own if k not in state and k not in dropped]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        raise MissingWeightsError(
            f"the weights in {source} do not fit the architecture: {len(mismatched)} tensors of another shape "
            f"(e.g. {mismatched[:2]}), {len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}); check the model name"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)


def _timm_pretrained(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or getattr(cfg, "file", None)
    if not hub:  # timm would warn and silently initialise at random
        raise MissingWeightsError(f"timm has no pretrained weights for {name!r}; name a tagged model (e.g. {name}.<tag>) "
                                  "or pass weights=<path of a saved state dict>")
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except TypeError:  # a wrong keyword argument, not missing weights
        raise
    except Exception as error:  # the hub reports a missing file or no network with several exception types
        raise MissingWeightsError(
            f"the ImageNet weights of {name!r} could not be loaded ({type(error).__name__}: {str(error)[:200]}). "
            f"They come from {hub}. On a machine without network, pre-populate the Hugging Face cache elsewhere "
            f"with `huggingface-cli download {hub}` and copy ~/.cache/huggingface (or $HF_HOME) here, "
            "or pass weights=<path of a saved state dict>; weights=None trains from random initialisation."
        ) from error


def backbone(
    name: str,
    num_classes: int,
    *,
    weights: str | os.PathLike[str] | None = "imagenet",
    weights_folder: str | os.PathLike[str] | None = None,
    frozen_batchnorm: bool | None = None,
    **timm_kwargs: object,
) -> Backbone:
    """A timm network ``name`` with a new ``num_classes``-way head and its input normalisation.

    Args:
        name: a timm model name (e.g. ``"resnetv2_50.a1h_in1k"``, ``"mobilenetv2_100"``) or a key of
            :data:`OFFLINE_MODELS` (e.g. ``"mobilenetv1_025.tflite_in1k"``).
        weights: ``"imagenet"`` (pretrained: timm's release, or the offline file), a path of a state
            dict, or ``None`` for random weights.
        weights_folder: folder of the offline files (default ``$KDCOURSE_WEIGHTS``).
        frozen_batchnorm: make every BatchNorm a frozen one (running statistics and affine fixed).
            Default: True for pretrained weights (fine-tuning on 2,000 images must not move
            ImageNet statistics, and the offline files need it), False for random weights.
        timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``).

    Raises:
        MissingWeightsError: pretrained weights were asked for and are not available.
    """
    import timm

    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    offline = OFFLINE_MODELS.get(name)
    if offline is None and not timm.is_model(name.split(".")[0]):
        raise ValueError(f"unknown model {name!r}: neither a timm model nor one of {sorted(OFFLINE_MODELS)}")
    if weights is not None and not (weights == "imagenet" or isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"weights must be 'imagenet', a file path or None, got {weights!r}")
    if offline is not None:
        model = offline.build(num_classes)
        mean, std = TFLITE_NORMALISATION
        source = "random"
        if weights == "imagenet":
            folder = weights_dir(weights_folder)
            if folder is None:
                raise MissingWeightsError(
                    f"{name} needs its converted ImageNet weights {offline.file} ({offline.description}): "
                    f"put the file in a folder and set ${WEIGHTS_ENV} to it (or pass weights_folder=...)."
                )
            path = folder / offline.file
            if not path.is_file():
                raise MissingWeightsError(
                    f"{name} needs its converted ImageNet weights {path} ({offline.description}), which does not exist: "
                    f"copy {offline.file} into {folder} or point ${WEIGHTS_ENV} at the folder that holds it."
                )
            _check_sha256(path, name, offline)
            weights = path
        if weights is not None:
            _load_into(model, _read_state_dict(Path(weights)), str(weights))
            source = Path(weights).name
    else:
        if weights == "imagenet":
            model = _timm_pretrained(name, num_classes, **timm_kwargs)
            source = getattr(model, "pretrained_cfg", {}).get("hf_hub_id") or name
        else:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, **timm_kwargs)
            source = "random"
            if weights is not None:
                _load_into(model, _read_state_dict(Path(weights)), str(weights))
                source = Path(weights).name
        config = timm.data.resolve_model_data_config(model)
        mean, std = tuple(config["mean"]), tuple(config["std"])
    pretrained = source != "random"
    if pretrained and num_classes != IMAGENET_CLASSES:
        reset_head(model)
    if frozen_batchnorm if frozen_batchnorm is not None else pretrained:
        model = freeze_batchnorm(model)
    return Backbone(name, model, tuple(mean), tuple(std), source, pretrained)


def reset_head(model: nn.Module) -> nn.Module:
    """Initialise ``model``'s classifier at the fan-in scale (PyTorch's default: weights uniform in
    ±1/√D for D input features) with a zero bias; returns ``model``.

    :func:`backbone` calls it for every new head on pretrained weights. timm's MobileNets draw their
    classifier with Google's range 1/√(number of classes), meant for 1,000 classes: a two-way head then
    starts with weights of ±0.71, its first logits spread by about ±17 on MobileNetV2's features, and a
    head phase of a few hundred AdamW steps at 1e-3 never unlearns that start (it stays below a
    linear probe on the same features). Started at the fan-in scale it fits like the probe."""
    classifier = model.get_classifier()
    if isinstance(classifier, (nn.Linear, nn.Conv2d)):
        classifier.reset_parameters()
        if classifier.bias is not None:
            nn.init.zeros_(classifier.bias)
    return model


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm turned into timm's frozen BatchNorm (returned; may be a new object).

    A frozen BatchNorm keeps its running statistics and affine parameters as buffers, so neither
    ``model.train()`` nor an optimiser changes them: use it when fine-tuning pretrained weights.
    """
    from timm.layers import freeze_batch_norm_2d

    return freeze_batch_norm_2d(model)


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Set ``requires_grad`` of every parameter of ``module``; returns ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)
    return module


# timm families that run as: prefix modules → a sequence of stages → suffix modules → forward_head (head modules)
_LAYOUTS: dict[str, tuple[tuple[str, ...], str | tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "EfficientNet": (("conv_stem", "bn1"), "blocks", ("conv_head", "bn2"), ("global_pool", "classifier")),  # MobileNets
    "ResNetV2": (("stem",), "stages", ("norm",), ("head",)),
    "ResNet": (("conv1", "bn1", "act1", "maxpool"), ("layer1", "layer2", "layer3", "layer4"), (), ("global_pool", "fc")),
}


def _layout(model: nn.Module) -> tuple[tuple[str, ...], str | tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    layout = _LAYOUTS.get(type(model).__name__)
    if layout is None:
        raise ValueError(f"split_at supports timm {sorted(_LAYOUTS)} models, not {type(model).__name__}; fine-tune it whole")
    return layout


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The stages of a timm network in order, with the names its ``feature_info`` gives them: the
    items of one sequence (``"blocks.3"``) or separate attributes (ResNet's ``"layer3"``)."""
    _, sequence, _, _ = _layout(model)
    if isinstance(sequence, tuple):
        return [(name, getattr(model, name)) for name in sequence]
    return [(f"{sequence}.{index}", stage) for index, stage in enumerate(getattr(model, sequence))]


class Trunk(nn.Module):
    """The first ``stages`` stages of a timm network (with its stem): images ``(N, 3, H, W)`` → feature maps."""

    def __init__(self, model: nn.Module, stages: int) -> None:
        super().__init__()
        prefix, _, _, _ = _layout(model)
        self.layers = nn.Sequential(*(getattr(model, n) for n in prefix), *(stage for _, stage in _stages(model)[:stages]))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Top(nn.Module):
    """The rest of a timm network after :class:`Trunk`: feature maps → logits ``(N, C)``, or pooled
    features ``(N, D)`` with ``pre_logits=True``. It shares its modules with the network and holds
    only them (its parameters and state are those of the later stages and the head)."""

    def __init__(self, model: nn.Module, stages: int) -> None:
        super().__init__()
        _, _, suffix, head = _layout(model)
        self.layers = nn.Sequential(*(stage for _, stage in _stages(model)[stages:]), *(getattr(model, n) for n in suffix))
        self.head = nn.ModuleList(getattr(model, n) for n in head)
        self.__dict__["network"] = model  # for its forward_head; not a submodule, so the trunk stays out of this one

    def train(self, mode: bool = True) -> "Top":
        super().train(mode)
        self.network.training = mode  # forward_head reads the network's own flag (dropout)
        return self

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.network.forward_head(self.layers(x), pre_logits=pre_logits)


def splittable(model: nn.Module) -> bool:
    """Whether :func:`split_at` knows the layout of ``model``'s family (ViTs, for instance, are not cut)."""
    return type(model).__name__ in _LAYOUTS


def split_at(model: nn.Module, reduction: int = 16) -> tuple[Trunk, Top]:
    """Cut a timm network after its last stage at ``reduction`` (input side / feature-map side).

    ``top(trunk(x)) == model(x)``. With ``reduction=16`` the top of a MobileNet is its last stage at
    stride 32 plus the head; raise ``ValueError`` for another family or a reduction it does not have.
    """
    names = [name for name, _ in _stages(model)]
    ends = [info["module"] for info in getattr(model, "feature_info", []) if info.get("reduction") == reduction]
    if not ends or ends[-1] not in names:
        have = sorted({info.get("reduction") for info in getattr(model, "feature_info", [])} - {None})
        raise ValueError(f"{type(model).__name__} has no stage at reduction {reduction}; it has {have}")
    stages = names.index(ends[-1]) + 1
    return Trunk(model, stages), Top(model, stages)


class _ConvClassifier(nn.Module):
    """A 1 × 1-convolution classifier (ResNetV2's) applied to pooled features ``(N, D)``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x[:, :, None, None]).flatten(1)


def pooled_head(model: nn.Module) -> nn.Module:
    """The classifier of a timm network as a module from pooled features ``(N, D)`` to logits ``(N, C)``.

    It shares its weights with the network, so training it trains the network's head. Most timm
    classifiers are already a linear layer and are returned as they are; a 1 × 1 convolution
    (ResNetV2) is fed a 1 × 1 map."""
    classifier = model.get_classifier()
    return _ConvClassifier(classifier) if isinstance(classifier, nn.Conv2d) else classifier
