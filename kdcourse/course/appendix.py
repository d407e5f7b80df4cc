"""The appendix of recorded results: every full-profile result file with its provenance, in words."""

from __future__ import annotations

from typing import Any

import pandas as pd
from IPython.display import display

from kdcourse.course import findings, tables, timings
from kdcourse.course.results import list_results, load_results

__all__ = ["HEADERS", "NO_RESULTS", "provenance_table", "recorded_table", "show_recorded"]

# words for the column names that the chapters' recorded tables use
HEADERS = {
    "parameters": "parameters",
    "macs": "MACs per image",
    "flops": "FLOPs per image",
    "MFLOPs": "MFLOPs per image",
    "latency_ms_batch1": "latency, batch of 1 (ms)",
    "latency_ms_per_sample_batched": "latency per image, batched (ms)",
    "temperature": "T",
    "alpha": "α",
    "beta": "β",
    "count": "seeds",
}
NO_RESULTS = (
    "No full-profile results have been recorded yet. To create them, run a chapter with the "
    "full profile, e.g. `kdcourse execute <chapter> --profile full`, and commit book/results/full/."
)


def _minute(stamp: str) -> str:
    """An ISO date-time to the minute, ``2026-12-07 08:15``."""
    return stamp[:16].replace("T", " ")


def provenance_table(record: dict[str, Any]) -> tables.Table:
    """The training of the networks behind a result file and the run that wrote it, side by side."""
    run, training = record["provenance"], record.get("training", {})
    trained = bool(training.get("commits"))
    dates = [_minute(d) for d in (training.get("first"), training.get("last")) if d]
    seeds = ", ".join(map(str, run["seeds"]))
    rows = [
        ("commit", ", ".join(training.get("commits", [])) or "not recorded", run["commit"]),
        ("device", "; ".join(training.get("devices", [])) or "not recorded", run["device"]),
        ("dates (UTC)", " to ".join(dates) or "—", _minute(run["date"])),
        ("time", timings.minutes(training.get("train_seconds")) + " of training epochs" if trained else "—",
         timings.minutes(run["wall_seconds"]) + " wall time"),
        ("seeds", seeds, seeds),
        ("networks", str(training.get("networks") or "—"), ""),
        ("PyTorch", "", run.get("torch", "—")),
    ]
    return tables.readable(pd.DataFrame(rows, columns=["", "training of the networks", "this record"]))


def recorded_table(title: str, rows: list[dict[str, Any]]) -> tables.Table:
    """A chapter's recorded table in words; a table of fractions (``fraction`` in its title) in %."""
    fraction = "fraction" in title
    caption = title.replace("fraction", "%") if fraction else title
    return tables.readable(pd.DataFrame(rows), HEADERS, scale=100 if fraction else 1, caption=caption)


def show_recorded(profile: str = "full") -> None:
    """Display every recorded result file of ``profile``: a heading linking its chapter, its
    provenance table, its training provenance's source when recorded, then its tables."""
    names = list_results(profile)
    if not names:
        print(NO_RESULTS)
    for name in names:
        record = load_results(name, profile)
        findings.say(f"### {{doc}}`{name}`\n\n**Provenance.**")
        display(provenance_table(record))
        if record.get("training", {}).get("source"):
            findings.say(f"*Training provenance:* {record['training']['source']}")
        for title, rows in record["results"].get("tables", {}).items():
            display(recorded_table(title, rows))
