"""Helpers shared by the study modules: configuration keys, profile overrides, paired differences, JSON rows."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from typing import Any, TypeVar

import pandas as pd

__all__ = ["config_key", "with_overrides", "paired_difference", "json_records"]

Config = TypeVar("Config")


def config_key(config: Any) -> str:
    """Short hash (10 hex digits) of a dataclass configuration: runs with another configuration never share checkpoints."""
    return hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:10]


def with_overrides(config: Config, **overrides: object) -> Config:
    """``config`` with ``overrides`` (field names of its dataclass) applied; None values are ignored."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]


def paired_difference(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """Per-seed difference ``a − b`` of two accuracies (fractions, indexed by seed), in points.

    Returns ``mean``, ``std`` (ddof 1; 0 with one seed) and ``seeds``, the number of seeds present in both.
    """
    d = ((a - b) * 100).dropna()
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "seeds": int(len(d))}


def json_records(frame: pd.DataFrame, digits: int = 4) -> list[dict]:
    """Rows of ``frame`` (index included) as JSON-ready dicts: floats rounded to ``digits``, NaN as None."""
    def clean(value: object) -> object:
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, digits)
        if hasattr(value, "item"):  # numpy scalars
            return clean(value.item())
        return value

    return [{str(k): clean(v) for k, v in row.items()} for row in frame.reset_index().to_dict(orient="records")]
