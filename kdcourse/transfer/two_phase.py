"""The usual two phases of transfer learning, on cached views (:mod:`kdcourse.transfer.cache`).

1. *feature extraction*: the backbone frozen, a new head is trained on the pooled features;
2. *fine-tuning*: the top (the stages after ``split_reduction`` and the head) is trained on the
   trunk's maps at a lower learning rate, with a cosine schedule.

Every phase keeps its best epoch on the validation metric and is checkpointed, so a rerun resumes.
A network trained *from scratch* (:meth:`TwoPhaseRunner.scratch`) has no frozen part: all its layers
train from random weights on augmented images, for as many epochs as both phases together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from kdcourse import data as kd_data
from kdcourse import hardware
from kdcourse.backbones import backbone, pooled_head, set_trainable, split_at
from kdcourse.kd.method import CrossEntropy
from kdcourse.train import FitResult, fit, predict_logits
from kdcourse.transfer.cache import Views
from kdcourse.transfer.views import ViewBatches

__all__ = ["TwoPhaseSettings", "Trained", "TwoPhaseRunner"]

LossFn = Callable[..., Tensor]  # a distillation method (kdcourse.kd.method) or any loss called like one


@dataclass(frozen=True)
class TwoPhaseSettings:
    """What the two phases need: backbone name per role, where the trunk is cut, whether the weights
    are pretrained (ImageNet) or random, batch size, epochs and AdamW learning rates of each phase, and
    the validation metric that selects every phase's best epoch (``fit``'s names: ``"auc"``, ``"accuracy"``)."""

    names: dict[str, str]
    split_reduction: int = 16
    pretrained: bool = True
    batch_size: int = 64
    head_epochs: int = 30
    head_lr: float = 1e-3
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4
    val_metric: str = "auc"

    @classmethod
    def from_config(cls, config: object, names: dict[str, str], val_metric: str = "auc") -> TwoPhaseSettings:
        """The settings read from the same-named fields of a study's configuration ``config``."""
        given = {f.name: getattr(config, f.name) for f in fields(cls) if f.name not in ("names", "val_metric")}
        return cls(names=names, val_metric=val_metric, **given)


@dataclass
class Trained:
    """A network trained in two phases: its top (fine-tuned), the fits, and its outputs."""

    top: nn.Module
    head_fit: FitResult
    fit: FitResult
    test_logits: Tensor  # (N_test, K)
    head_test_logits: Tensor | None  # (N_test, K) after the head phase alone
    train_logits: Tensor | None = None  # (V, N, K) on every cached training view, for distilling from it
    val_logits: Tensor | None = None  # (N_val, K)


class TwoPhaseRunner:
    """Trains networks on the cached ``views`` of each role, with checkpoints under ``folder``.

    ``dataset`` gives the labels (and, for :meth:`scratch`, the images); ``amp_dtype`` is the mixed
    precision (None: float32)."""

    def __init__(self, settings: TwoPhaseSettings, dataset: kd_data.ImageData, views: dict[str, Views], folder: Path,
                 device: torch.device, amp_dtype: torch.dtype | None = None) -> None:
        self.settings, self.dataset, self.views, self.folder = settings, dataset, views, Path(folder)
        self.device, self.amp = device, amp_dtype

    def fresh(self, role: str, seed: int, outputs: int = 2) -> tuple[nn.Module, nn.Module]:
        """A new network of ``role`` and its top, its trunk frozen; the head is initialised from ``seed``
        (the same for every arm of a seed and role)."""
        settings = self.settings
        torch.manual_seed(seed)
        net = backbone(settings.names[role], outputs, weights="imagenet" if settings.pretrained else None)
        trunk, top = split_at(net.model, settings.split_reduction)
        set_trainable(trunk, False)
        return net.model, top

    def two_phase(self, role: str, seed: int, name: str, method: LossFn | None = None, soft: Tensor | None = None,
                  outputs: int = 2, targets: Tensor | None = None, keep_train_logits: bool = False,
                  class_logits: Callable[[Tensor], Tensor] | None = None) -> Trained:
        """Head on pooled features, then the top on trunk maps, both trained with ``method``
        (default :class:`kdcourse.kd.method.CrossEntropy`). ``soft`` ``(V, N, K)`` are teacher logits
        per training view (the method's extra), ``targets`` replace the class labels in training,
        ``class_logits`` maps ``outputs`` logits to class logits for validation."""
        settings, views = self.settings, self.views[role]
        method = CrossEntropy() if method is None else method
        model, top = self.fresh(role, seed, outputs)
        head_fit, head_test = self._head_phase(pooled_head(model), views, seed, name, method, soft, targets, class_logits)
        top_fit = fit(top, self._batches(views.train, seed, soft, targets), method, epochs=settings.finetune_epochs,
                      lr=settings.finetune_lr, schedule="cosine", val_data=(views.val, self.dataset.val.y),
                      checkpoint=self.folder / f"seed{seed}_{name}.ckpt", description=name,
                      **self._common(seed, class_logits))
        test, val = self.logits(top, views.test), self.logits(top, views.val)
        train = torch.stack([self.logits(top, v) for v in views.train]) if keep_train_logits else None
        return Trained(top, head_fit, top_fit, test, head_test, train, val)

    def head_only(self, role: str, seed: int, name: str) -> tuple[FitResult, Tensor]:
        """The feature-extraction phase alone of ``role`` on labels (``views`` may hold pooled features
        only): its fit and its test logits ``(N_test, K)``."""
        model, _ = self.fresh(role, seed)
        return self.head_phase(pooled_head(model), role, seed, name)

    def head_phase(self, head: nn.Module, role: str, seed: int, name: str) -> tuple[FitResult, Tensor]:
        """Train a given ``head`` (pooled features → logits) on labels, on the pooled features of ``role``;
        its fit and test logits. ``name`` names its checkpoint."""
        return self._head_phase(head, self.views[role], seed, name, CrossEntropy(), None, None, None)

    def _head_phase(self, head: nn.Module, views: Views, seed: int, name: str, method: LossFn, soft: Tensor | None,
                    targets: Tensor | None, class_logits: Callable[[Tensor], Tensor] | None) -> tuple[FitResult, Tensor]:
        """Train ``head`` on the pooled features of every view; its fit and its test logits."""
        settings = self.settings
        result = fit(head, self._batches(views.pooled_train, seed, soft, targets), method, epochs=settings.head_epochs,
                     lr=settings.head_lr, val_data=(views.pooled_val, self.dataset.val.y),
                     checkpoint=self.folder / f"seed{seed}_{name}_head.ckpt", description=f"{name} head",
                     **self._common(seed, class_logits))
        return result, predict_logits(head, views.pooled_test, device=self.device, amp_dtype=self.amp)

    def _batches(self, features: Tensor, seed: int, soft: Tensor | None, targets: Tensor | None) -> ViewBatches:
        """Mini-batches of random views of ``features`` with the labels (or ``targets``) and ``soft``."""
        y = self.dataset.train.y if targets is None else targets
        extras = () if soft is None else (soft,)
        return ViewBatches(features, y, *extras, batch_size=self.settings.batch_size, seed=seed)

    def _common(self, seed: int, class_logits: Callable[[Tensor], Tensor] | None) -> dict:
        """The arguments of ``fit`` that both phases share."""
        return {"seed": seed, "device": self.device, "amp_dtype": self.amp, "val_metric": self.settings.val_metric,
                "class_logits": class_logits}

    def logits(self, module: nn.Module, inputs: Tensor | kd_data.TensorBatches) -> Tensor:
        """``module``'s outputs ``(N, K)`` on ``inputs`` (a tensor or batches), float32 on the CPU."""
        return predict_logits(module, inputs, batch_size=256, device=self.device, amp_dtype=self.amp)

    def scratch(self, role: str, seed: int, outputs: int = 2) -> tuple[FitResult, Tensor]:
        """``role``'s network from random weights (all layers, trainable BatchNorm), trained for as many epochs
        as both pretrained phases together (``head_epochs + finetune_epochs``, so that the comparison with
        ImageNet weights is at an equal budget) at ``head_lr`` on augmented images; returns its fit and test logits."""
        settings, data = self.settings, self.dataset
        torch.manual_seed(seed)
        net = backbone(settings.names[role], outputs, weights=None)
        model = net.model.to(memory_format=hardware.CONV_MEMORY_FORMAT)
        train = kd_data.TensorBatches(data.train.x, data.train.y, batch_size=settings.batch_size, seed=seed,
                                      transform=kd_data.ImageTransform(net.mean, net.std, device=self.device))
        plain = kd_data.ImageTransform(net.mean, net.std, augment=False, device=self.device)

        def batches(x: Tensor) -> kd_data.TensorBatches:
            return kd_data.TensorBatches(x, batch_size=settings.batch_size, shuffle=False, transform=plain)

        epochs = settings.head_epochs + settings.finetune_epochs
        result = fit(model, train, CrossEntropy(), epochs=epochs, lr=settings.head_lr,
                     schedule="cosine", seed=seed, val_data=(batches(data.val.x), data.val.y),
                     val_metric=settings.val_metric, device=self.device, amp_dtype=self.amp,
                     checkpoint=self.folder / f"seed{seed}_{role}_scratch.ckpt", description=f"{role} from scratch")
        return result, self.logits(model, batches(data.test.x))
