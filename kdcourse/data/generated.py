"""The note that marks a folder of generated stand-in files, so that a loader reports them as generated."""

from __future__ import annotations

from pathlib import Path

__all__ = ["GENERATED_NOTE", "mark_generated", "generated_source"]

GENERATED_NOTE = "GENERATED.txt"


def mark_generated(folder: Path, what: str) -> None:
    """Write the note into ``folder``: its files are a generated stand-in for ``what``, not the data set."""
    (folder / GENERATED_NOTE).write_text(f"These files are a generated stand-in in the on-disk format of {what}, "
                                         f"for smoke runs and tests; they are not {what}.\n")


def generated_source(folder: Path, name: str) -> str | None:
    """``"generated stand-in for <name>"`` when ``folder`` holds the note, else None."""
    return f"generated stand-in for {name}" if (folder / GENERATED_NOTE).is_file() else None
