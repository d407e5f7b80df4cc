"""The optimisers and learning-rate schedules of :func:`kdcourse.train.fit`.

Optimisers: AdamW (the fused kernel) or SGD with momentum, classical or Nesterov's. The parameters
of BatchNorm layers can take their own learning rate (``norm_lr_scale``; K. Jordan's "94% on
CIFAR-10 in 3.29 seconds on a single GPU" trains BatchNorm biases 64 times faster than the
weights). Schedules, stepped once per batch except ``"plateau"``: ``"constant"``, ``"cosine"`` (to
zero), ``"onecycle"``, ``"triangle"`` (that paper's: linear warm-up, then linear decay) and
``"plateau"`` (cut on stalled validation, stepped once per epoch by ``fit``).
"""

from __future__ import annotations

import torch
from torch import nn

from kdcourse.kd.method import Method

__all__ = ["SCHEDULES", "OPTIMIZERS", "PLATEAU_FACTOR", "TRIANGLE", "trained_parameters", "make_optimizer",
           "make_scheduler", "triangle_factor"]

SCHEDULES = ("constant", "cosine", "onecycle", "plateau", "triangle")
OPTIMIZERS = ("adamw", "sgd")
PLATEAU_FACTOR = 0.1  # "plateau": the learning rate is multiplied by this when validation stalls
# "triangle": the rate's factor at the first step, the fraction of the steps where it peaks at 1, its factor at the end
TRIANGLE = (0.2, 0.23, 0.07)

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def trained_parameters(model: nn.Module, method: Method) -> list[nn.Parameter]:
    """The model's parameters, then the method's own trainable ones (adapters; not a frozen teacher's)."""
    parameters = list(model.parameters())
    known = {id(p) for p in parameters}
    return parameters + [p for p in method.parameters() if p.requires_grad and id(p) not in known]


def _norm_parameters(model: nn.Module) -> set[int]:
    """The ids of the parameters of the model's BatchNorm layers."""
    return {id(p) for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for p in module.parameters(recurse=False)}


def make_optimizer(name: str, model: nn.Module, method: Method, *, lr: float, weight_decay: float, momentum: float,
                   nesterov: bool, norm_lr_scale: float, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser ``name`` over :func:`trained_parameters`, in one parameter group, or two when
    ``norm_lr_scale`` is not 1: then the BatchNorm parameters form the second group, at
    ``lr · norm_lr_scale`` with ``weight_decay / norm_lr_scale`` (so that their decay per step is the others')."""
    parameters = trained_parameters(model, method)
    groups: list[dict] = [{"params": parameters}]
    if norm_lr_scale != 1.0:
        norms = _norm_parameters(model)
        groups = [{"params": [p for p in parameters if id(p) not in norms]},
                  {"params": [p for p in parameters if id(p) in norms], "lr": lr * norm_lr_scale,
                   "weight_decay": weight_decay / norm_lr_scale}]
        groups = [group for group in groups if group["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    # the fused kernel makes one pass over each parameter: the update is memory-bound for MLPs
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))


def triangle_factor(step: int, total: int) -> float:
    """The factor of the learning rate at ``step`` (0-based) of ``total`` in the ``"triangle"`` schedule:
    linear from ``TRIANGLE[0]`` to 1 at ``TRIANGLE[1] · total`` steps, then linear to ``TRIANGLE[2]`` at ``total``."""
    start, peak_share, end = TRIANGLE
    peak = int(peak_share * total)
    if step < peak:
        return start + (1.0 - start) * step / peak
    return 1.0 + (end - 1.0) * (min(step, total) - peak) / (total - peak)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int,
                   plateau_patience: int) -> Scheduler | None:
    """The scheduler of ``schedule`` over ``epochs · steps_per_epoch`` steps (None for ``"constant"``)."""
    total = epochs * steps_per_epoch
    if schedule == "constant":
        return None
    if schedule == "plateau":  # stepped once per epoch with the validation score
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR, patience=plateau_patience)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if schedule == "triangle":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: triangle_factor(step, total))
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=0.15)
