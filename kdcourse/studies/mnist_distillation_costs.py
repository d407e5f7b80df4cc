"""What the teacher and the student of the MNIST distillation chapter cost: parameters, MACs and FLOPs
per image, and latency on a CPU (ms), as a frame, a table and sentences."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from torch import nn

from kdcourse import costs, models
from kdcourse.course import tables

__all__ = ["COST_TABLE", "COST_HEADERS", "size_text", "cost_frame", "cost_table", "latency_machine", "cost_text"]

COST_TABLE = "Cost per image"
COST_HEADERS = {
    "parameters": "parameters", "macs": "MACs per image", "flops": "FLOPs per image",
    "latency_ms_batch1": "latency, one image (ms)",
    "latency_ms_per_sample_batched": "latency per image, batch of 256 (ms)", "MFLOPs": "MFLOPs per image",
}


def size_text(teacher: nn.Module, student: nn.Module) -> str:
    """The sentence comparing the sizes of ``teacher`` and ``student``: parameters and MACs per image."""
    (t_params, t_macs), (s_params, s_macs) = (
        (models.count_parameters(net), costs.count_macs(net, (1, 28, 28))) for net in (teacher, student)
    )
    return (
        f"""The student has *more* parameters than the teacher ({s_params:,} against
{t_params:,}, {100 * (s_params / t_params - 1):.0f} % more) but needs
{t_macs / s_macs:.0f} times fewer multiply-accumulates per image, and it has no
built-in notion that neighbouring pixels belong together: it must learn that from data, which is
where a teacher can help."""
    )


def cost_frame(trained: Mapping[str, nn.Module], repeats: int) -> pd.DataFrame:
    """Cost per image (:func:`kdcourse.costs.profile_model`, latency over ``repeats`` passes) of the
    teacher and the KD student of ``trained``
    (:attr:`kdcourse.studies.mnist_distillation.StudyOutcome.models`); index ``model``."""
    frame = pd.DataFrame([
        {"model": name, **costs.profile_model(trained[key], (1, 28, 28), repeats=repeats).as_row()}
        for name, key in [("teacher (CNN)", "teacher"), ("student (MLP)", "kd")]
    ]).set_index("model")
    frame["MFLOPs"] = frame.flops / 1e6
    return frame


def cost_table(frame: pd.DataFrame, caption: str | None = None) -> tables.Table:
    """The cost table for a reader: counts with thousands separators, latencies in ms."""
    counts = frame.assign(parameters=frame.parameters.map("{:,.0f}".format), macs=frame.macs.map("{:,.0f}".format))
    return tables.readable(counts, COST_HEADERS, digits=4, drop=("flops",), caption=caption)


def latency_machine(device: str) -> str:
    """Where latencies were measured: always on a CPU, named by ``device`` (the run's device description)."""
    return device if device.startswith("CPU") else f"the CPU of a machine with {device}"


def cost_text(frame: pd.DataFrame, machine: str) -> str:
    """The paragraph on what teacher and student cost (rows of :func:`cost_frame`; latencies on ``machine``)."""
    teacher, student = frame.loc["teacher (CNN)"], frame.loc["student (MLP)"]
    return (
        f"""The student has {100 * (student.parameters / teacher.parameters - 1):.0f} % more parameters
than the teacher but needs {teacher.macs / student.macs:.0f} times fewer operations: most of the
teacher's work is in its second convolution, which slides 64 filters over every position of a 25×25
map, whereas each of the student's weights is used once per image. Measured on {machine}, one image took
{teacher.latency_ms_batch1:.2f} ms through the teacher and {student.latency_ms_batch1:.2f} ms through
the student; in batches, {teacher.latency_ms_per_sample_batched:.3f} and
{student.latency_ms_per_sample_batched:.4f} ms per image. Latencies depend on the machine and on what else
runs on it; the counts do not."""
    )
