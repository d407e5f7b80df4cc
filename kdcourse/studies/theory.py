"""The theory chapter's small numerical checks: the temperature's effect on the distillation gradient,
how two loss conventions compare, gradients through deep plain and residual stacks, and the costs of
separable convolutions and MobileNetV2. Everything runs on a CPU in about a second."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from kdcourse.costs import count_macs
from kdcourse.course import plots
from kdcourse.course.findings import in_words
from kdcourse.kd.hinton import kd_loss

__all__ = [
    "centred",
    "temperature_gradients",
    "plot_softened",
    "plot_temperature_gradients",
    "loss_gradient",
    "same_direction",
    "relative_grad_norms",
    "parameter_count",
    "mobilenet_v2_costs",
]


def centred(z: torch.Tensor) -> torch.Tensor:
    """Logits ``z`` of shape (batch, classes) minus each row's mean (the softmax ignores it)."""
    return z - z.mean(dim=1, keepdim=True)


def temperature_gradients(student: torch.Tensor, teacher: torch.Tensor, temperatures: Sequence[float]) -> pd.DataFrame:
    """For each temperature T (the index), per-example quantities of ``kd_loss`` (T²·KL, batchmean)
    on logits of shape (B, N): the mean gradient norm with respect to the student's logits with and
    without the T² factor, the relative distance of the gradient to its high-T limit
    (centred s − centred t)/N, the loss, and the high-T limit of the loss, ‖centred s − centred t‖²/2N."""
    batch, classes = student.shape
    difference = centred(student) - centred(teacher)
    limit = difference / classes
    rows = []
    for T in temperatures:
        s = student.clone().requires_grad_(True)
        loss = kd_loss(s, teacher, T)
        (grad,) = torch.autograd.grad(loss, s)
        per_example = batch * grad  # undo the batch average
        rows.append({
            "T": T,
            "|grad| of T²·KL (as defined)": per_example.norm(dim=1).mean().item(),
            "|grad| of KL (without T²)": (per_example / T**2).norm(dim=1).mean().item(),
            "rel. distance to the high-T limit": ((per_example - limit).norm() / limit.norm()).item(),
            "T²·KL": loss.item(),
            "‖centred s − centred t‖² / 2N": difference.pow(2).sum(1).mean().item() / (2 * classes),
        })
    return pd.DataFrame(rows).set_index("T")


def plot_softened(probs: dict[float, np.ndarray]) -> None:
    """Bars of a teacher's softened distribution over ten digits, one colour per temperature."""
    fig, ax = plt.subplots(figsize=(plots.PAGE_WIDTH, 3.8))
    width = 0.8 / len(probs)
    for k, (T, p) in enumerate(probs.items()):
        ax.bar(np.arange(10) + (k - (len(probs) - 1) / 2) * width, p, width, label=f"T = {T}")
    ax.set_xticks(np.arange(10), [str(c) for c in range(10)])
    ax.set_xlabel("class (digit)")
    ax.set_ylabel("probability softmax(t / T)")
    ax.set_title(f'Teacher output for a "7" at {in_words(len(probs))} temperatures')
    ax.legend(title="temperature", ncols=len(probs), loc="upper left")
    fig.tight_layout()
    plt.show()


def plot_temperature_gradients(grads: pd.DataFrame, limit_norm: float) -> None:
    """The gradient norms of :func:`temperature_gradients` against T on log-log axes, with the
    high-T limit ``limit_norm`` (mean per-example norm of (centred s − centred t)/N) and a 1/T² guide."""
    fig, ax = plt.subplots(figsize=(7, 4))
    Ts = grads.index.to_numpy()
    ax.loglog(Ts, grads.iloc[:, 0], "o-", label="loss as defined: T²·KL")
    ax.loglog(Ts, grads.iloc[:, 1], "s-", label="without the factor: KL")
    ax.axhline(limit_norm, color="gray", ls="--", label="high-T limit |(s − t)|/N (centred logits)")
    ax.loglog(Ts, grads.iloc[0, 1] / Ts.astype(float) ** 2, ":", color="black", label="slope 1/T² (guide)")
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("mean per-example gradient norm\nw.r.t. student logits")
    ax.set_title("The T² factor keeps the soft-target gradient constant")
    ax.legend()
    fig.tight_layout()
    plt.show()


def loss_gradient(loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss_fn`` at ``logits`` (a copy; ``logits`` is not changed)."""
    s = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(s), s)
    return grad


def same_direction(g1: torch.Tensor, g2: torch.Tensor) -> tuple[float, float]:
    """The least-squares factor c with g1 ≈ c·g2, and the relative residual ‖g1 − c·g2‖ / ‖g1‖."""
    scale = (g1 * g2).sum() / (g2 * g2).sum()
    return scale.item(), ((g1 - scale * g2).norm() / g1.norm()).item()


def relative_grad_norms(x: torch.Tensor, activation: Callable[[torch.Tensor], torch.Tensor], depth: int = 40,
                        residual: bool = False, he_init: bool = False) -> torch.Tensor:
    """Gradient norms of the weights of each layer of a ``depth``-layer square fully connected stack
    (width ``x.shape[1]``), relative to the last layer's, for the loss mean(output²) on inputs ``x``.

    Each layer computes ``activation(W h + b)``, or ``h + activation(W h + b)`` with ``residual``;
    weights from PyTorch's default initialisation (seed 1), or He's (``kaiming_normal_``, zero biases)."""
    torch.manual_seed(1)
    width = x.shape[1]
    layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
    if he_init:
        for layer in layers:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    h = x
    for layer in layers:
        h = h + activation(layer(h)) if residual else activation(layer(h))
    h.pow(2).mean().backward()
    norms = torch.tensor([layer.weight.grad.norm().item() for layer in layers])
    return norms / norms[-1]


def parameter_count(module: nn.Module) -> int:
    """The number of parameters of ``module`` (buffers such as BatchNorm statistics not included)."""
    return sum(p.numel() for p in module.parameters())


def mobilenet_v2_costs(classes: Sequence[int] = (1000, 2)) -> pd.DataFrame:
    """torchvision's MobileNetV2 (random weights) with a head of each number of ``classes``: its
    parameters, the same plus the BatchNorm running statistics (as Keras counts them), and the MACs
    of one 224 × 224 image (ptflops)."""
    import torchvision

    rows = []
    for n in classes:
        net = torchvision.models.mobilenet_v2(num_classes=n)
        statistics = sum(b.numel() for name, b in net.named_buffers() if name.endswith(("running_mean", "running_var")))
        rows.append({"classes": n, "parameters": parameter_count(net),
                     "+ BatchNorm running statistics": parameter_count(net) + statistics,
                     "MACs per image (224×224)": count_macs(net, (3, 224, 224))})
    return pd.DataFrame(rows).set_index("classes")
