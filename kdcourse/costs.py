"""Cost of a model per sample: parameters, multiply-accumulates (MACs), FLOPs and measured latency.

MACs are counted by ptflops; FLOPs = 2 · MACs (one multiply and one add). These are counts per
input sample, not rates. Latency is wall time measured on this machine and depends on it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn

from kdcourse.models import count_parameters

__all__ = ["ModelCost", "count_macs", "measure_latency", "profile_model", "throughput", "estimated_seconds"]


@dataclass(frozen=True)
class ModelCost:
    """Per-sample cost: ``parameters``; ``macs`` and ``flops`` per input; latency in milliseconds."""

    parameters: int
    macs: int
    flops: int
    latency_ms_batch1: float
    latency_ms_per_sample_batched: float

    def as_row(self) -> dict[str, float]:
        """The cost as a flat dict (for a table)."""
        return asdict(self)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one input of ``input_shape`` (without the batch dimension)."""
    from ptflops import get_model_complexity_info

    was_training = model.training  # ptflops switches the model to eval mode and leaves it there
    try:
        macs, _ = get_model_complexity_info(
            model, tuple(input_shape), as_strings=False, print_per_layer_stat=False, verbose=False, backend="pytorch"
        )
    finally:
        model.train(was_training)
    if macs is None:  # ptflops prints the exception and returns None when the forward pass fails
        raise RuntimeError(f"ptflops could not count the MACs of {type(model).__name__} on inputs of shape {tuple(input_shape)}")
    return int(macs)


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time of one forward pass per sample, in milliseconds, on the CPU, in eval mode."""
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *input_shape)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    model.train(was_training)
    return statistics.median(times) * 1000.0 / batch_size


def profile_model(model: nn.Module, input_shape: tuple[int, ...], *, batched: int = 256, repeats: int = 50) -> ModelCost:
    """Parameters, MACs, FLOPs and latency (batch of 1, and per sample in a batch of ``batched``)."""
    macs = count_macs(model, input_shape)
    return ModelCost(
        parameters=count_parameters(model),
        macs=macs,
        flops=2 * macs,
        latency_ms_batch1=measure_latency(model, input_shape, 1, repeats),
        latency_ms_per_sample_batched=measure_latency(model, input_shape, batched, max(5, repeats // 5)),
    )


def throughput(model: nn.Module, input_shape: tuple[int, ...], *, batch_size: int = 16, backward: bool = False,
               repeats: int = 3, warmup: int = 1, device: str | torch.device = "cpu", amp_dtype: torch.dtype | None = None) -> float:
    """Images per second of ``model`` on random inputs of ``input_shape``: forward passes in eval mode, or with
    ``backward`` forward and backward passes in training mode (gradients of the summed logits; no optimiser
    step). The median of ``repeats`` timed batches of ``batch_size`` after ``warmup`` untimed ones, under
    ``amp_dtype`` autocast when given."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size and repeats must be >= 1 and warmup >= 0, got {batch_size}, {repeats}, {warmup}")
    device = torch.device(device)
    was_training = model.training
    model.to(device).train(backward)
    x = torch.randn(batch_size, *input_shape, device=device)

    def step() -> None:
        with torch.set_grad_enabled(backward), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(x)
        if backward:
            out.float().sum().backward()
            model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    model.train(was_training)
    return batch_size / statistics.median(times)


def estimated_seconds(counts: pd.DataFrame, rates: dict[str, float]) -> pd.DataFrame:
    """``counts`` (one row per stage with ``network``, ``pass`` and ``images``) with ``seconds`` =
    images / measured rate; ``rates`` maps ``"<network> <pass>"`` (e.g. ``"teacher forward"``, from
    :func:`throughput`) to images per second."""
    missing = {f"{n} {p}" for n, p in zip(counts.network, counts["pass"], strict=True)} - set(rates)
    if missing:
        raise ValueError(f"no measured rate for {sorted(missing)}")
    seconds = [images / rates[f"{n} {p}"] for n, p, images in zip(counts.network, counts["pass"], counts.images, strict=True)]
    return counts.assign(seconds=seconds)
