"""Networks used in the course.

Image backbones (any timm model with a new head, ImageNet weights from one named place) come from
:func:`backbone`, defined in :mod:`kdcourse.backbones`. The MNIST models reproduce the architectures of the source reports exactly (the teacher is the
Keras CNN of the TensorFlow knowledge-distillation tutorial, the student a 784-784-784-10 MLP),
so that parameter counts and costs can be compared with theirs. All models return logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdcourse.backbones import Backbone, backbone

__all__ = [
    "backbone",
    "Backbone",
    "ByteMaskDropout",
    "mnist_teacher",
    "mnist_student",
    "mnist_assistant",
    "mlp",
    "count_parameters",
]


class ByteMaskDropout(nn.Module):
    """Dropout (inverted, like :class:`torch.nn.Dropout`) whose masks are drawn eight at a time.

    In training, each element of the input is zeroed with probability ``p`` and the others are
    multiplied by ``1 / (1 − p)``; in evaluation the input passes unchanged. Each mask element is one
    random byte compared with ``256 p``, and one 64-bit draw of the generator gives eight of them,
    where ``nn.Dropout`` draws once per element: on a 2-core Xeon the teacher's masks (a million
    elements per batch of 128) cost 3 ms instead of 12 ms per step, forward and backward
    (``kdcourse bench`` has both). ``p`` must therefore be a multiple of 1/256 (0.5 and 0.25 are).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0 or (p * 256) % 1:
            raise ValueError(f"p must be a multiple of 1/256 in [0, 1), such as 0.5 or 0.25; got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        count = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, (-(-count // 8),), dtype=torch.int64, device=x.device)
        keep = words.view(torch.uint8)[:count].reshape(x.shape) >= round(self.p * 256)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def mnist_teacher(dropout: float = 0.5) -> nn.Sequential:
    """CNN teacher for 1×28×28 MNIST digits; 1,011,466 parameters.

    conv3×3(32) → maxpool2 (stride 1) → conv3×3(64) → maxpool2 (stride 2) → flatten (7,744)
    → dropout → dense(128) → dropout → dense(10). Input ``(N, 1, 28, 28)``, output logits ``(N, 10)``.
    The dropout layers are :class:`ByteMaskDropout` (``dropout`` a multiple of 1/256).
    About 10.9 M multiply-accumulates (MACs) per image in its convolutions and dense layers;
    ptflops (:func:`kdcourse.costs.count_macs`) reports 11.2 M, as it also counts bias
    additions, ReLUs and pooling.
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=1),
        nn.Conv2d(32, 64, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        ByteMaskDropout(dropout),
        nn.Linear(11 * 11 * 64, 128),
        nn.ReLU(inplace=True),
        ByteMaskDropout(dropout),
        nn.Linear(128, 10),
    )


def mlp(hidden: list[int], in_features: int = 784, num_classes: int = 10, dropout: float = 0.0) -> nn.Sequential:
    """Fully connected network ``in_features → hidden[0] → … → num_classes`` with ReLU.

    Accepts images of any shape whose trailing dimensions multiply to ``in_features``
    (``(N, 1, 28, 28)`` for MNIST) and returns logits ``(N, num_classes)``. ``dropout`` is applied
    after each hidden activation (0 disables it and adds no module).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def mnist_student(dropout: float = 0.0) -> nn.Sequential:
    """MLP student 784-784-784-10 of the reports; 1,238,730 parameters, about 1.24 M MACs per image."""
    return mlp([784, 784], dropout=dropout)


def mnist_assistant(dropout: float = 0.0, num_outputs: int = 10) -> nn.Sequential:
    """Small CNN teacher assistant, between the teacher and the student in capacity.

    conv3×3(16) → maxpool2 → conv3×3(32) → maxpool2 → flatten (800) → dense(64) → dense(num_outputs);
    56,714 parameters and about 0.71 M MACs per image in its convolutions and dense layers (0.78 M
    as counted by ptflops, which adds biases, ReLUs and pooling): a cheaper network than the student
    by parameters, but with the convolutional prior of the teacher. ``num_outputs`` sets the width
    of the last layer (e.g. ``C·s`` subclass logits for subclass distillation).
    """
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs must be an integer >= 1, got {num_outputs!r}")
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(5 * 5 * 32, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, num_outputs),
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
