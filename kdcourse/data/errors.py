"""The two errors of every loader: the data set is absent, or it is there but damaged."""

from __future__ import annotations

__all__ = ["MissingDataError", "CorruptDataError"]


class MissingDataError(FileNotFoundError):
    """A data set is not where the loader looked, and could not be downloaded; the message says where to put it."""


class CorruptDataError(ValueError):
    """A data file exists but is truncated, does not decode or is not in the expected format; the message names it."""
