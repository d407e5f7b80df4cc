"""Training-throughput benchmark: ``kdcourse bench``.

Measures, on random MNIST-shaped data, the wall time of training steps for the teacher and the
student, starting from the plain recipe (float32, batches of 128, PyTorch's default Adam and
dropout) and adding one by one what the MNIST chapter uses: bfloat16 autocast, dropout masks drawn
from random bytes for the teacher, batches of 256 for the students, the fused Adam kernel, and
students stacked into one :class:`~kdcourse.kd.stacked.StackedMLP`. It
reports seconds per training epoch of 55,000 images, per model. Run it on an otherwise idle machine:
two processes sharing two cores slow each other down many times over. Random data produces no
denormal numbers, so the effect of flushing them (see ``kdcourse/__init__.py``) shows only in
real training runs.

``kdcourse bench --cifar N`` instead times training epochs of the CIFAR-10 teacher
(:mod:`kdcourse.cifar_teacher`) on ``N`` real training images through ``fit``, and its validation
pass, and estimates the seconds of an epoch on the 45,000 images of the training split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdcourse import hardware, models
from kdcourse.cifar_teacher import AirbenchRecipe, plain_batches, teacher_run
from kdcourse.data import ImageData
from kdcourse.kd import stacked
from kdcourse.train import fit, predict_logits

__all__ = ["time_steps", "benchmark", "repeated", "cifar_teacher_epoch", "main"]

EPOCH_IMAGES = 55_000
CIFAR_EPOCH_IMAGES = 45_000  # CIFAR-10's training split once 5,000 validation images are held out


def time_steps(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    """Mean wall seconds of one call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _training_step(
    model: torch.nn.Module, loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, amp: torch.dtype | None, fused: bool
) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)

    def step() -> None:
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits = model(x)
        value = loss(logits.float())
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return step


def _with_torch_dropout(model: torch.nn.Sequential) -> torch.nn.Sequential:
    """``model`` with each :class:`~kdcourse.models.ByteMaskDropout` replaced by PyTorch's ``nn.Dropout``."""
    for index, layer in enumerate(model):
        if isinstance(layer, models.ByteMaskDropout):
            model[index] = torch.nn.Dropout(layer.p)
    return model


def benchmark(stack_size: int = 4, steps: int = 20) -> list[dict[str, float | str]]:
    """Seconds per epoch (55,000 images) and per model, from the plain recipe to the one the MNIST chapter uses.

    Rows: the teacher with PyTorch's dropout in float32 and with bfloat16 autocast (channels-last),
    then with the byte-mask dropout of :class:`~kdcourse.models.ByteMaskDropout`; one student alone in
    float32 with batches of 128 and PyTorch's default (for-each) Adam, the starting point; then
    bfloat16, batches of 256, the fused Adam kernel, and finally ``stack_size`` students stacked.
    """
    torch.manual_seed(0)
    rows = []

    def add(name: str, model: torch.nn.Module, batch: int, amp: torch.dtype | None, fused: bool, members: int = 1) -> None:
        x = torch.randn(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))
        if members > 1:
            teacher_logits = torch.randn(batch, 10)
            temperatures, alphas = torch.full((members,), 4.0), torch.full((members,), 0.5)
            loss = lambda out: stacked.grid_distillation_loss(out, teacher_logits, y, temperatures, alphas).sum()
        else:
            loss = lambda out: F.cross_entropy(out, y)
        if "teacher" in name:
            x = x.contiguous(memory_format=torch.channels_last)
            model = model.to(memory_format=torch.channels_last)
        seconds = time_steps(_training_step(model, loss, x, amp, fused), steps)
        per_epoch = seconds * EPOCH_IMAGES / batch
        rows.append({
            "model": name, "precision": "bf16 autocast" if amp else "fp32", "batch": batch,
            "adam": "fused" if fused else "for-each", "seconds_per_epoch": round(per_epoch, 2),
            "seconds_per_epoch_per_model": round(per_epoch / members, 3),
        })

    add("teacher (CNN)", _with_torch_dropout(models.mnist_teacher()), 128, None, False)
    add("teacher (CNN)", _with_torch_dropout(models.mnist_teacher()), 128, torch.bfloat16, True)
    add("teacher, byte masks", models.mnist_teacher(), 128, torch.bfloat16, True)
    add("one student", models.mnist_student(), 128, None, False)
    add("one student", models.mnist_student(), 128, torch.bfloat16, False)
    add("one student", models.mnist_student(), 256, torch.bfloat16, False)
    add("one student", models.mnist_student(), 256, torch.bfloat16, True)
    add(f"{stack_size} stacked students", stacked.StackedMLP([models.mnist_student() for _ in range(stack_size)]), 256, torch.bfloat16, True, stack_size)
    return rows


def repeated(stack_size: int = 4, steps: int = 20, repeats: int = 3) -> list[dict[str, float | str]]:
    """:func:`benchmark` ``repeats`` times in this process: each row's median seconds per epoch and
    model, with the lowest and highest of the repeats (``low``, ``high``)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs = [benchmark(stack_size, steps) for _ in range(repeats)]
    rows = []
    for i, row in enumerate(runs[0]):
        values = sorted(run[i]["seconds_per_epoch_per_model"] for run in runs)
        rows.append({**row, "seconds_per_epoch_per_model": statistics.median(values), "low": values[0], "high": values[-1],
                     "repeats": repeats})
    return rows


def cifar_teacher_epoch(data: ImageData, images: int = 5000, *, seed: int = 0, device: str | torch.device = "cpu",
                        recipe: AirbenchRecipe = AirbenchRecipe()) -> dict[str, float | int | str | None]:
    """Two training epochs of the airbench teacher through ``fit`` on ``images`` training images of ``data``
    (a seeded sample), in the precision the hardware runs natively, then its validation pass (with the
    recipe's test-time views) on as many validation images.

    Returns the images trained per epoch (whole batches) and validated, the wall seconds of the first
    epoch (with the one-off set-up of the kernels), of the second and of the validation pass, images
    per second of the second epoch and of validation, and ``epoch_seconds_45k``: the estimated seconds
    of one training epoch of 45,000 images and one validation pass of 5,000 at those rates.
    """
    device = torch.device(device)
    sample = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:images]
    subset = dataclasses.replace(data, train=data.train.subset(sample))
    amp = hardware.autocast_dtype(device)
    model, batches, settings = teacher_run(subset, seed=seed, recipe=recipe, device=device)
    first, second = (h["seconds"] for h in fit(model, batches, epochs=2, device=device, amp_dtype=amp, progress=False,
                                                **settings).history)
    trained = len(batches) * recipe.batch_size
    validation = data.val.x[:images]
    start = time.perf_counter()
    predict_logits(model, plain_batches(validation, data, device), device=device, amp_dtype=amp)
    val_seconds = time.perf_counter() - start
    train_rate, val_rate = trained / second, len(validation) / val_seconds
    return {"cpu": hardware.cpu_model(), "threads": torch.get_num_threads(), "precision": "bf16 autocast" if amp else "fp32",
            "batch": recipe.batch_size, "train_images": trained, "first_epoch_seconds": round(first, 2),
            "train_seconds": round(second, 2),
            "train_images_per_second": round(train_rate, 1), "val_images": len(validation), "val_seconds": round(val_seconds, 2),
            "val_images_per_second": round(val_rate, 1), "tta": recipe.tta,
            "epoch_seconds_45k": round(CIFAR_EPOCH_IMAGES / train_rate + 5000 / val_rate, 1)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the benchmark as a table (or JSON with ``--json``); ``--record`` also
    writes it to ``book/results/bench/training_steps.json`` for the README."""
    parser = argparse.ArgumentParser(prog="kdcourse bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack-size", type=int, default=4, help="students per StackedMLP (the chapter uses 4)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the whole benchmark; rows give their median")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--record", action="store_true", help="write the result file that the README's Speed table is rendered from")
    parser.add_argument("--cifar", type=int, metavar="N", help="instead: epochs of the CIFAR-10 teacher on N real training images")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's); 1 where another job shares the cores")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cifar is not None:
        from kdcourse.data import load_cifar10

        print(json.dumps(cifar_teacher_epoch(load_cifar10(download=False), args.cifar), indent=1))
        return 0
    start = time.perf_counter()
    rows = repeated(args.stack_size, args.steps, args.repeats)
    if args.record:
        from kdcourse.course import book, results

        folder = book.repo_root() / "book" / "results" / "bench"
        path = results.save_results("training_steps", {"threads": torch.get_num_threads(), "steps": args.steps, "rows": rows},
                                    profile="bench", seeds=[0], wall_seconds=time.perf_counter() - start, folder=folder)
        print(f"recorded {path}")
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))
    else:
        print(f"threads: {torch.get_num_threads()}; one epoch = {EPOCH_IMAGES:,} images")
        print(f"{'model':<22} {'precision':<14} {'batch':>5} {'Adam':<9} {'s/epoch per model (median, low–high)':>38}")
        for row in rows:
            print(f"{row['model']:<22} {row['precision']:<14} {row['batch']:>5} {row['adam']:<9} "
                  f"{row['seconds_per_epoch_per_model']:>18.3f} ({row['low']:.3f}–{row['high']:.3f})")
    return 0
