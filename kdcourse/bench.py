"""Training-throughput benchmark: ``kdcourse bench``.

Measures, on random MNIST-shaped data, the wall time of training steps for the teacher, for one
student trained alone, and for a grid of students stacked into one :class:`~kdcourse.distill.StackedMLP`
(the way the MNIST chapter trains its T × α grid), in float32 and with bfloat16 autocast. It
reports seconds per training epoch of 55,000 images, per student, so the two ways of training a
grid can be compared directly. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import distill, models

__all__ = ["time_steps", "benchmark", "main"]

EPOCH_IMAGES = 55_000


def time_steps(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    """Mean wall seconds of one call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _training_step(model: torch.nn.Module, loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, amp: torch.dtype | None) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits = model(x)
        value = loss(logits.float())
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return step


def benchmark(batch_size: int = 128, grid_size: int = 31, steps: int = 20) -> list[dict[str, float | str]]:
    """Seconds per epoch (55,000 images) and per model for teacher, lone student and stacked students."""
    torch.manual_seed(0)
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (batch_size,))
    teacher_logits = torch.randn(batch_size, 10)
    temperatures, alphas = torch.full((grid_size,), 4.0), torch.full((grid_size,), 0.5)
    steps_per_epoch = EPOCH_IMAGES / batch_size
    rows = []
    for amp in (None, torch.bfloat16):
        cases = {
            "teacher (CNN, channels-last)": (models.mnist_teacher().to(memory_format=torch.channels_last), lambda out: F.cross_entropy(out, y), 1),
            "one student alone": (models.mnist_student(), lambda out: F.cross_entropy(out, y), 1),
            f"{grid_size} stacked students": (
                distill.StackedMLP([models.mnist_student() for _ in range(grid_size)]),
                lambda out: distill.grid_distillation_loss(out, teacher_logits, y, temperatures, alphas).sum(),
                grid_size,
            ),
        }
        for name, (model, loss, members) in cases.items():
            inputs = x.contiguous(memory_format=torch.channels_last) if "teacher" in name else x
            seconds = time_steps(_training_step(model, loss, inputs, amp), steps if members == 1 else max(3, steps // 4))
            rows.append({
                "model": name, "precision": "bf16 autocast" if amp else "fp32", "batch": batch_size,
                "seconds_per_epoch": round(seconds * steps_per_epoch, 2),
                "seconds_per_epoch_per_model": round(seconds * steps_per_epoch / members, 3),
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the benchmark as a table (or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="kdcourse bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--grid-size", type=int, default=31)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = benchmark(args.batch_size, args.grid_size, args.steps)
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))
    else:
        print(f"threads: {torch.get_num_threads()}, batch {args.batch_size}, epoch = {EPOCH_IMAGES:,} images")
        for row in rows:
            print(f"{row['model']:<32} {row['precision']:<14} {row['seconds_per_epoch']:>9.2f} s/epoch  "
                  f"{row['seconds_per_epoch_per_model']:>8.3f} s/epoch per model")
    return 0
