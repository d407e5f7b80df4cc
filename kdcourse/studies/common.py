"""Helpers shared by the study modules: configuration keys, profile overrides, a study's MNIST splits,
paired differences, JSON rows."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, fields, replace
from typing import Any, Protocol, TypeVar

import pandas as pd

from kdcourse import data as kd_data

__all__ = ["config_key", "with_overrides", "check_seeds", "SplitSettings", "study_dataset", "paired_difference",
           "json_records", "json_ready"]

Config = TypeVar("Config")


def config_key(config: Any, added: tuple[str, ...] = ()) -> str:
    """Short hash (10 hex digits) of a dataclass configuration: runs with another configuration never share checkpoints.

    ``added`` names fields added to the dataclass after runs were recorded: each is left out of the hash while it
    holds its default, so that adding a field keeps the checkpoints of every configuration that does not use it."""
    values = asdict(config)
    defaults = {f.name: f.default for f in fields(config)}
    for name in added:
        if values[name] == defaults[name]:
            del values[name]
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def with_overrides(config: Config, **overrides: object) -> Config:
    """``config`` with ``overrides`` (field names of its dataclass) applied, checked: the one place where
    every study configuration is made and checked (each ``config_for`` returns this).

    None values are ignored and lists become tuples (a chapter parameter set with ``-p`` arrives as a
    list). Raises TypeError, as a call would, for a name that is not a field, and ValueError, when the
    configuration has ``seeds``, for seeds :func:`check_seeds` refuses.
    """
    names = {field.name for field in fields(config)}  # type: ignore[arg-type]
    if unknown := sorted(set(overrides) - names):
        raise TypeError(f"{type(config).__name__} has no field {', '.join(unknown)}; its fields: {', '.join(sorted(names))}")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    result = replace(config, **given)  # type: ignore[type-var]
    if "seeds" in names:
        check_seeds(result.seeds)  # type: ignore[attr-defined]
    return result


def check_seeds(seeds: object) -> None:
    """Raise ValueError unless ``seeds`` is a tuple of at least one distinct integer >= 0 (``(0, 1, 2)``):
    ``(0, 0)`` would report the spread of one seed as that of two, ``()`` runs nothing."""
    if (not isinstance(seeds, tuple) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds must be a tuple of at least one distinct integer >= 0, such as (0, 1, 2); got {seeds!r}")


class SplitSettings(Protocol):
    """What :func:`study_dataset` needs of a study configuration."""

    val_size: int
    train_samples: int | None


def study_dataset(config: SplitSettings, dataset: kd_data.ImageData) -> kd_data.ImageData:
    """``dataset`` with its training split cut to its first ``config.train_samples`` images (when set);
    checks that the validation split has ``config.val_size`` images."""
    if len(dataset.val) != config.val_size:
        raise ValueError(f"dataset has {len(dataset.val)} validation images but config.val_size is {config.val_size}; "
                         "load it with load_mnist(val_size=config.val_size)")
    if config.train_samples is None:
        return dataset
    return replace(dataset, train=dataset.train.head(config.train_samples))


def paired_difference(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """Per-seed difference ``a − b`` of two accuracies (fractions, indexed by seed), in points.

    Returns ``mean``, ``std`` (ddof 1; 0 with one seed) and ``seeds``, the number of seeds present in both.
    """
    d = ((a - b) * 100).dropna()
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "seeds": int(len(d))}


def json_records(frame: pd.DataFrame, digits: int = 4) -> list[dict]:
    """Rows of ``frame`` (index included) as JSON-ready dicts: floats rounded to ``digits``, NaN as None."""
    return [json_ready(row, digits) for row in frame.reset_index().to_dict(orient="records")]


def json_ready(value: Any, digits: int = 6) -> Any:
    """``value`` with every float inside it (dicts, lists, tuples) rounded to ``digits``, NaN as None,
    numpy scalars as Python ones, tuples as lists and dict keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, digits) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    if hasattr(value, "item"):  # numpy scalars
        return json_ready(value.item(), digits)
    return value
