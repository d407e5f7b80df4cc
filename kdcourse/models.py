"""Networks used in the course.

Image backbones (any timm model with a new head, ImageNet weights from one named place) come from
:func:`backbone`, defined in :mod:`kdcourse.backbones`. The MNIST models reproduce the architectures of the source reports exactly (the teacher is the
Keras CNN of the TensorFlow knowledge-distillation tutorial, the student a 784-784-784-10 MLP),
so that parameter counts and costs can be compared with theirs. :class:`AirbenchNet` is a CIFAR-10
network trained from scratch in about ten epochs (:mod:`kdcourse.cifar_teacher` trains it). All
models return logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse.backbones import Backbone, backbone
from kdcourse.data.normalise import normalise_images
from kdcourse.hardware import CONV_MEMORY_FORMAT

__all__ = [
    "backbone",
    "Backbone",
    "ByteMaskDropout",
    "mnist_teacher",
    "mnist_student",
    "mnist_assistant",
    "mlp",
    "AirbenchNet",
    "ConvGroup",
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


def _identity_conv(in_width: int, out_width: int) -> nn.Conv2d:
    """3×3 convolution, zero-padded to keep the size, without bias; its first ``min(in, out)`` filters start as
    the identity (each passes its own input channel through), the others at PyTorch's default initialisation."""
    conv = nn.Conv2d(in_width, out_width, kernel_size=3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_width])
    return conv


def _batch_norm(width: int) -> nn.BatchNorm2d:
    """BatchNorm with its scale fixed at 1 (only its shift trains), ε = 1e-12, running statistics that keep
    60 % of their value at each step."""
    norm = nn.BatchNorm2d(width, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    """conv3×3 → max-pool 2 → BatchNorm → GELU → conv3×3 → BatchNorm → GELU: ``(N, in_width, H, W)`` to
    ``(N, out_width, H // 2, W // 2)``. The convolutions start as partial identities (see :class:`AirbenchNet`)."""

    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        self.conv1 = _identity_conv(in_width, out_width)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batch_norm(out_width)
        self.conv2 = _identity_conv(out_width, out_width)
        self.norm2 = _batch_norm(out_width)
        self.activ = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The CIFAR-10 network of K. Jordan's "94% on CIFAR-10 in 3.29 seconds on a single GPU" (airbench94).

    Input: normalised images ``(N, 3, 32, 32)``; output: logits ``(N, num_classes)``. Layers: a
    whitening convolution (2×2 patches, no padding, 24 channels: the 12 eigenvectors of the training
    patches' second-moment matrix, each divided by the square root of its eigenvalue (+ ε), and their
    negatives; weights frozen, set by :meth:`init_whitening`; bias trained for the first
    ``whiten_bias_epochs`` epochs, then frozen through :meth:`set_epoch`, which ``fit`` calls) → GELU →
    three :class:`ConvGroup` of ``widths`` (64, 256, 256) channels (31 → 15 → 7 → 3 pixels) → max-pool 3
    → linear layer without bias, its output multiplied by ``output_scale`` (1/9). The 3×3 convolutions
    start as partial identities (their first filters pass their input channels through); BatchNorm
    trains its shift only. 1.97 M parameters, about 0.12 G multiply-accumulates per image in its convolutions.

    In evaluation mode the logits average test-time views (``tta``): 0 the image alone, 1 the image
    and its mirror image, 2 those and both mirrored again after a 1-pixel translation up-left and
    down-right (reflected border), weighted as in the paper (half on the first two views). Set
    ``tta=0`` for a network whose features another method reads through hooks.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256), *, output_scale: float = 1 / 9,
                 whiten_bias_epochs: int = 3, tta: int = 1) -> None:
        super().__init__()
        if len(widths) != 3 or any(not isinstance(w, int) or w < 1 for w in widths) or num_classes < 1:
            raise ValueError(f"AirbenchNet needs three positive widths and num_classes >= 1, got {widths!r} and {num_classes!r}")
        if tta not in (0, 1, 2) or whiten_bias_epochs < 0:
            raise ValueError(f"tta must be 0, 1 or 2 and whiten_bias_epochs >= 0, got {tta!r} and {whiten_bias_epochs!r}")
        self.output_scale, self.whiten_bias_epochs, self.tta = output_scale, whiten_bias_epochs, tta
        self.whiten = nn.Conv2d(3, 2 * 3 * 2 * 2, kernel_size=2, bias=True)
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():
            self.whiten.bias.zero_()
        self.activ = nn.GELU()
        self.groups = nn.Sequential(ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2]))
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def extra_repr(self) -> str:
        return f"output_scale={self.output_scale}, whiten_bias_epochs={self.whiten_bias_epochs}, tta={self.tta}"

    @torch.no_grad()
    def init_whitening(self, images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], eps: float = 5e-4) -> None:
        """Set the whitening filters from training ``images``: uint8 ``(N, 3, H, W)`` (0–255), normalised
        with ``mean``/``std`` (per channel, [0, 1] units) as the network's inputs will be.

        The 2×2 patches' second-moment matrix ``M`` (12 × 12, in float64) has eigenvalues ``λ`` and
        eigenvectors ``v``; filter ``i`` is ``v_i / sqrt(λ_i + eps)`` (largest λ first), so that the first
        12 output channels of a patch have second moments ``λ / (λ + eps)`` ≈ 1 and none across
        channels, and the other 12 are their negatives. The paper uses the first 5,000 training images.
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
            raise ValueError(f"init_whitening needs uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        size = self.whiten.kernel_size[0]
        moment, count = torch.zeros(3 * size * size, 3 * size * size, dtype=torch.float64), 0
        for chunk in images.split(1000):
            patches = F.unfold(normalise_images(chunk.cpu(), mean, std), size).transpose(1, 2).reshape(-1, 3 * size * size)
            moment += patches.double().T @ patches.double()
            count += len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(moment / count)  # ascending
        filters = (eigenvectors.T / (eigenvalues + eps).sqrt().unsqueeze(1)).flip(0).reshape(-1, 3, size, size)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def set_epoch(self, epoch: int) -> None:
        """Train the whitening bias in epochs ``0 … whiten_bias_epochs − 1`` (0-based), freeze it afterwards."""
        self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)

    def logits(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of one view ``x`` ``(N, 3, 32, 32)`` (no test-time augmentation)."""
        x = self.activ(self.whiten(x.contiguous(memory_format=CONV_MEMORY_FORMAT)))
        return self.head(self.pool(self.groups(x)).flatten(1)) * self.output_scale

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.tta == 0:
            return self.logits(x)
        mirrored = 0.5 * (self.logits(x) + self.logits(x.flip(-1)))
        if self.tta == 1:
            return mirrored
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        height, width = x.shape[-2:]
        shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]
        return 0.5 * mirrored + 0.25 * sum(0.5 * (self.logits(v) + self.logits(v.flip(-1))) for v in shifted)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
