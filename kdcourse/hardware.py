"""What the hardware does well: the one place that chooses precision and memory layout.

bfloat16 autocast pays only where the hardware multiplies bf16 natively: a CUDA GPU that
supports it, or a CPU with AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``). Elsewhere,
an AVX2-only CPU for example, PyTorch emulates bf16 and a training step is 5–10× slower than in
float32, so float32 is chosen. ``KDCOURSE_PRECISION`` (``auto``, ``bf16`` or ``fp32``) overrides the
choice, for a benchmark or to reproduce a run exactly on other hardware.

Channels-last memory layout measured faster for convolutions on every CPU tried (a 2-core Xeon
with AMX and a 2-core AMD EPYC with AVX2: MNIST CNN 1.5× per step, MobileNetV2 fp32 the fastest
setting) and is what cuDNN prefers for mixed-precision convolutions, so it is the layout of
every convolutional model here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

__all__ = [
    "PRECISION_ENV",
    "PRECISIONS",
    "cpu_flags",
    "cpu_model",
    "native_bf16",
    "autocast_dtype",
    "precision_summary",
    "CONV_MEMORY_FORMAT",
]

PRECISION_ENV = "KDCOURSE_PRECISION"
PRECISIONS = ("auto", "bf16", "fp32")
NATIVE_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
CONV_MEMORY_FORMAT = torch.channels_last


@functools.cache
def _cpuinfo(*keys: str) -> str | None:
    """The value of the first line of ``/proc/cpuinfo`` that starts with one of ``keys`` (None if there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where that file does not exist)."""
    return frozenset((_cpuinfo("flags", "Features") or "").split())


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (None where that file does not exist)."""
    return _cpuinfo("model name")


def native_bf16(device: str | torch.device = "cpu", flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` multiplies bfloat16 natively (CUDA with bf16 support; a CPU with AMX or AVX-512 BF16).

    ``flags`` replaces the CPU flags read from ``/proc/cpuinfo`` (for tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(NATIVE_BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags))
    return False


def _requested_precision() -> str:
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise ValueError(f"${PRECISION_ENV}={value!r} is not a precision; choose one of {', '.join(PRECISIONS)}")
    return value


def autocast_dtype(
    device: str | torch.device = "cpu", *, allowed: bool = True, flags: frozenset[str] | None = None
) -> torch.dtype | None:
    """The autocast dtype for training and inference on ``device``: ``torch.bfloat16`` or ``None`` (float32).

    ``allowed=False`` (a study configured without mixed precision) always gives float32. Otherwise
    ``$KDCOURSE_PRECISION`` decides when it says ``bf16`` or ``fp32``, and ``auto`` (the default)
    chooses bf16 exactly where :func:`native_bf16` is true.
    """
    if not allowed:
        return None
    requested = _requested_precision()
    if requested == "fp32":
        return None
    if requested == "bf16" or native_bf16(device, flags):
        return torch.bfloat16
    return None


def precision_summary(device: str | torch.device = "cpu", *, allowed: bool = True) -> str:
    """One line for a chapter's output: the precision chosen on ``device`` and why."""
    dtype = autocast_dtype(device, allowed=allowed)
    native = native_bf16(device)
    requested = _requested_precision()
    name = "bfloat16 autocast" if dtype is not None else "float32"
    if not allowed:
        why = "the study is configured without mixed precision"
    elif requested != "auto":
        why = f"${PRECISION_ENV}={requested}"
    else:
        why = "native bf16 on this device" if native else "no native bf16 on this device (bf16 would be emulated, several times slower)"
    return f"precision: {name} ({why})"
