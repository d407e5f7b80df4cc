"""What the models of the nuclear-norm chapter cost, timed when the page is built: parameters, MACs
and latency on this machine (ms per image in the frames, µs in tables and sentences), with the number
of threads and the recorded timings beside them. :class:`RenderLatency` holds the timings."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from kdcourse import models, provenance
from kdcourse.costs import count_macs
from kdcourse.course import findings
from kdcourse.course.tables import Table, readable
from kdcourse.studies import nuclear
from kdcourse.studies.nuclear_findings import NAME

__all__ = [
    "COST_TABLE", "DENSE", "RenderLatency", "time_models", "cost_table", "latency_text", "time_threads",
    "recordings_text",
]

COST_TABLE = "MNIST: cost on this machine"  # the study's cost table in the result file
DENSE = "student (dense)"  # the dense student's name in the timings


@dataclass
class RenderLatency:
    """Latencies timed when the page is built: ``timings`` (one row per model, batch and repeat, of
    :func:`nuclear.repeated_latency`) with ``threads`` PyTorch threads, their ``summary``
    (:func:`nuclear.latency_summary`), the ``counts`` (parameters, MACs) of each model and, after
    :func:`time_threads`, ``thread_summary`` with the machine's own number of threads as well."""

    candidates: list[tuple[str, nn.Module, int | None]]
    counts: dict[str, tuple[int, int]]
    timings: pd.DataFrame
    summary: pd.DataFrame
    threads: int
    repeats: int
    default_threads: int
    ranks: tuple[int, ...]
    thread_summary: pd.DataFrame | None = None

    def per_image(self, name: str, batch: int = 256) -> pd.Series:
        """The summary row of model ``name`` at ``batch`` images (``median``, ``low``, ``high`` in ms per image)."""
        return self.summary[(self.summary.model == name) & (self.summary.batch == batch)].iloc[0]

    def small_ranks(self) -> list[int]:
        """The ranks of at most 64 (the factorised students that the prose compares with the dense one)."""
        return [r for r in self.ranks if r <= 64]

    def small(self) -> list[pd.Series]:
        """The summary rows of the students factorised at :meth:`small_ranks`, in batches of 256."""
        return [self.per_image(f"student, W₁ at rank {r}") for r in self.small_ranks()]

    def dense_default(self) -> pd.Series:
        """The dense student in batches of 256 with the machine's own number of threads."""
        if self.thread_summary is None:
            return self.per_image(DENSE)
        rows = self.thread_summary
        return rows[(rows.model == DENSE) & (rows.threads == self.default_threads)].iloc[0]


def time_models(ranks: tuple[int, ...], *, repeats: int, threads: int) -> RenderLatency:
    """Time the MNIST teacher, the dense student and the student with ``W₁`` at each rank, in turns,
    ``repeats`` times with ``threads`` PyTorch threads, in batches of 1 and 256 (:func:`nuclear.repeated_latency`)."""
    candidates = nuclear.cost_models(models.mnist_student, models.mnist_teacher(), ranks)
    shape = (1, 28, 28)
    counts = {name: (models.count_parameters(m), count_macs(m, shape)) for name, m, _ in candidates}
    timings = nuclear.repeated_latency(candidates, shape, repeats=repeats, threads=threads)
    return RenderLatency(candidates, counts, timings, nuclear.latency_summary(timings), threads, repeats,
                         torch.get_num_threads(), tuple(ranks))


def _timing_text(row: pd.Series) -> str:
    """``"12.3 (11.9–13.0)"``: the median and range of a latency row, in µs."""
    return f"{1000 * row['median']:.1f} ({1000 * row['low']:.1f}–{1000 * row['high']:.1f})"


def cost_table(latency: RenderLatency) -> Table:
    """Parameters, MACs and the latency of each model for one image and per image in a batch of 256."""
    rows = []
    for name, _, _ in latency.candidates:
        one, batch = latency.per_image(name, 1), latency.per_image(name, 256)
        rows.append({"model": name, "parameters": latency.counts[name][0], "MACs": latency.counts[name][1] / 1e6,
                     "batch 1": _timing_text(one), "batch 256": _timing_text(batch),
                     "spread": f"{max(one.spread, batch.spread):.0f}"})
    headers = {"MACs": "MACs per image (M)", "batch 1": "one image: µs, median (range)",
               "batch 256": "per image in a batch of 256: µs, median (range)",
               "spread": "largest spread over repeats (% of the median)"}
    threads = f"{latency.threads} thread{'s' if latency.threads > 1 else ''}"
    caption = (f"MNIST: cost per image on this machine ({provenance.device_description()}), timed with "
               f"{threads}, {latency.repeats} repeats")
    return readable(pd.DataFrame(rows), headers, digits=3, caption=caption)


def latency_text(latency: RenderLatency) -> str:
    """The dense and the factorised students' latencies, how much the repeats vary, and how steady the
    ratio of the two is within one round of timings."""
    small_ranks, small = latency.small_ranks(), latency.small()
    dense, teacher, spreads = latency.per_image(DENSE), latency.per_image("teacher"), latency.summary.spread
    batched = latency.timings[latency.timings.batch == 256].pivot(index="repeat", columns="model", values="ms_per_image")
    ratios = batched[DENSE] / batched[[f"student, W₁ at rank {r}" for r in small_ranks]].max(axis=1)
    ratio_spread = 100 * (ratios.max() - ratios.min()) / ratios.median()
    steadier = ("steadier than the times themselves" if ratio_spread < dense["spread"]
                else "not steadier than the times themselves here")
    return f"""With one thread, in batches of 256, the dense student took {1000 * dense['median']:.1f} µs per image
(repeats from {1000 * dense['low']:.1f} to {1000 * dense['high']:.1f} µs), the students with $W_1$ at
ranks {small_ranks[0]} to {small_ranks[-1]} {1000 * min(r['median'] for r in small):.1f} to
{1000 * max(r['median'] for r in small):.1f} µs, and the teacher {1000 * teacher['median']:.0f} µs. Within this
one process the repeats of one model differ by {spreads.median():.0f} % of their median in a typical case and
by up to {spreads.max():.0f} % (the range of the repeats over their median). Within one round, the dense student
took {ratios.median():.2f} times as long as the slowest of those factorised students (range over the rounds
{ratios.min():.2f} to {ratios.max():.2f}, a spread of {ratio_spread:.0f} % against {dense['spread']:.0f} % for the
dense student's own times): a ratio taken within one round is {steadier}."""


def time_threads(latency: RenderLatency, rank: int) -> Table | str:
    """Time the dense student and the one with ``W₁`` at ``rank`` again with all of PyTorch's threads
    (batches of 256), keep both timings in ``latency.thread_summary`` and return them as a table;
    a sentence instead where PyTorch uses as many threads as the first timings."""
    if latency.default_threads == latency.threads:
        threads = latency.default_threads
        return f"PyTorch uses {threads} thread{'s' if threads > 1 else ''} here, as above: nothing to compare."
    names = (DENSE, f"student, W₁ at rank {rank}")
    chosen = [c for c in latency.candidates if c[0] in names]
    again = nuclear.repeated_latency(chosen, (1, 28, 28), repeats=latency.repeats, batch_sizes=(256,))
    first = latency.timings[(latency.timings.batch == 256) & latency.timings.model.isin(names)]
    latency.thread_summary = nuclear.latency_summary(pd.concat([first, again]))
    rows = latency.thread_summary
    return readable(rows.assign(timing=rows.apply(_timing_text, axis=1))[["model", "threads", "timing"]],
                    {"timing": "per image in a batch of 256: µs, median (range)"},
                    caption=f"MNIST: the number of PyTorch threads, {latency.repeats} repeats each")


def _apart(values: list[float]) -> str:
    """How much the slowest of ``values`` exceeds the fastest, in words."""
    factor = max(values) / min(values)
    return f"{100 * (factor - 1):.0f} % slower than" if factor < 2 else f"{factor:.1f} times as slow as"


def _recordings(profile: str, live_cost: pd.DataFrame) -> dict[str, float]:
    """The dense student's recorded latencies in batches of 256 (µs per image): this chapter's study
    (the live run in the full profile) and, when recorded, the distillation chapter's."""
    if findings.uses_recorded(profile):
        study = pd.DataFrame(findings.recorded(NAME)["results"]["tables"][COST_TABLE]).set_index("model")
        label = "this chapter's recorded run of the study"
    else:
        study, label = live_cost, "this run of the study"
    recordings = {label: 1000 * study.loc[DENSE, "latency_ms_per_image_batch256"]}
    try:  # the same dense student, timed in the recorded run of the distillation chapter
        table = findings.recorded("mnist_distillation")["results"]["tables"]["Cost per image"]
        other = pd.DataFrame(table).set_index("model")
        recordings["the recorded run of the distillation chapter"] = (
            1000 * other.loc["student (MLP)", "latency_ms_per_sample_batched"])
    except (FileNotFoundError, KeyError):
        pass
    return recordings


def recordings_text(latency: RenderLatency, profile: str, live_cost: pd.DataFrame) -> str:
    """The dense student's recorded latencies beside the one timed for this page, and what makes such
    timings differ (``live_cost``: the study's own cost table, indexed by model)."""
    recordings = _recordings(profile, live_cost)
    # the recordings timed the students with all the machine's threads: compare with the same here
    dense_default, threads = latency.dense_default(), latency.default_threads
    here_now = 1000 * dense_default["median"]
    here_label = f"{threads} thread{'s' if threads > 1 else ''}, as in the recordings"
    text = " and ".join(f"{v:.1f} µs in {k}" for k, v in recordings.items())
    if len(recordings) > 1:
        text += f": the slower recording is {_apart(list(recordings.values()))} the faster"
    thread_text = ""
    if latency.thread_summary is not None:
        dense_now = latency.per_image(DENSE)
        thread_text = (f" With {threads} threads instead of {latency.threads}, the dense student took "
                       f"{here_now:.1f} µs per image instead of {1000 * dense_now['median']:.1f} µs.")
        if dense_default["median"] > dense_now["median"]:
            thread_text += (" More threads were slower here: on a busy machine the threads of one matrix product wait "
                            "for each other and for the cores that other processes hold.")
    return f"""The same dense student, in batches of 256, timed once in each run of a study: {text}. Timed
again for this page ({here_label}, median of {latency.repeats} repeats), it took {here_now:.1f} µs, which is
{_apart([here_now, *recordings.values()])} the fastest of these timings.{thread_text} What changes between such timings is

* **the machine**: the CPU model, its caches and vector units, and how many cores the process gets;
* **the load**: other processes on a shared machine take cores and memory bandwidth, and the load of a
  busy machine can change within seconds; a recording does not say what else was running when it was made;
* **the threads**: PyTorch splits the matrix products of a batch over its threads, so a batch of 256
  depends on their number far more than a single image, whose time is mostly the fixed overhead of
  each call.

So compare latencies only within one table, measured in one process, and read the ratios between
models rather than the times; never compare them across runs, chapters or machines."""
