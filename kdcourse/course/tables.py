"""Results tables a reader can read, the same in every chapter and in the appendix.

:func:`readable` turns a DataFrame of numbers into a table of text: headers in words (with units),
each ``mean``/``std`` pair in one "mean ± std" cell, no index column, no ``NaN`` (an em dash
instead), and a width that wraps on a book page. It displays as HTML in a notebook and in the book
and as plain text elsewhere.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence

import pandas as pd

from kdcourse.stats import Effect, signed

__all__ = ["Table", "readable", "paired_effects", "mean_std_text", "number_text", "MISSING"]

MISSING = "—"
# (suffix of the mean column, suffix of its std column, suffix kept in the merged column's name)
_PAIR_SUFFIXES = (("_mean", "_std", ""), (" mean", " std", ""), ("mean", "std", ""), ("_accuracy", "_std", "_accuracy"))


def number_text(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals and a typographic minus (``"−0.46"``)."""
    text = f"{value:.{digits}f}"
    return "−" + text[1:] if text.startswith("-") else text


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_std_text(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``"98.94 ± 0.03"``; the mean alone when ``std`` is missing; :data:`MISSING` when ``mean`` is."""
    if _missing(mean):
        return MISSING
    if _missing(std):
        return number_text(mean, digits)
    return f"{number_text(mean, digits)} ± {std:.{digits}f}"


def _words(name: str) -> str:
    """``"teacher_val_accuracy"`` → ``"teacher val accuracy"``."""
    return re.sub(r"\s+", " ", str(name).replace("_", " ")).strip()


class Table:
    """A table of strings with a caption; ``_repr_html_`` for notebooks and the book, text otherwise."""

    def __init__(self, frame: pd.DataFrame, caption: str | None = None) -> None:
        self.frame, self.caption = frame, caption

    def __repr__(self) -> str:
        body = self.frame.to_string(index=False)
        return f"{self.caption}\n{body}" if self.caption else body

    def _repr_html_(self) -> str:
        table = self.frame.to_html(index=False, escape=True, border=0, classes="kd-table")
        caption = f"<p><strong>{html.escape(self.caption)}</strong></p>" if self.caption else ""
        style = (
            "<style>.kd-table{border-collapse:collapse;font-size:0.88em;margin:0.3em 0}"
            ".kd-table th{white-space:normal;max-width:11em;text-align:right;border-bottom:1px solid #888;"
            "padding:0.25em 0.5em;vertical-align:bottom}"
            ".kd-table td{text-align:right;padding:0.2em 0.5em;white-space:nowrap}"
            ".kd-table td:first-child,.kd-table th:first-child{text-align:left;white-space:normal}</style>"
        )
        return f'{style}<div style="overflow-x:auto">{caption}{table}</div>'


def _merge_pairs(frame: pd.DataFrame, digits: int, scale: float) -> pd.DataFrame:
    """Replace each numeric (x mean, x std) column pair by one text column x."""
    out: dict[str, pd.Series] = {}
    used: set[str] = set()
    columns = [str(c) for c in frame.columns]
    for column in columns:
        if column in used:
            continue
        for mean_suffix, std_suffix, kept in _PAIR_SUFFIXES:
            if column.endswith(mean_suffix):
                stem = column[: len(column) - len(mean_suffix)]
                partner = stem + std_suffix
                if partner in columns and partner not in used:
                    means, stds = frame[column].astype(float) * scale, frame[partner].astype(float) * scale
                    out[(stem + kept).strip() or "mean ± std"] = pd.Series(
                        [mean_std_text(m, s, digits) for m, s in zip(means, stds)], index=frame.index
                    )
                    used |= {column, partner}
                    break
        else:
            out[column] = frame[column]
            used.add(column)
    return pd.DataFrame(out, index=frame.index)


def _cell(value: object, digits: int) -> str:
    if _missing(value):
        return MISSING
    if isinstance(value, float):
        return number_text(value, digits)
    if hasattr(value, "item"):  # numpy scalar
        return _cell(value.item(), digits)
    return str(value)


def readable(
    frame: pd.DataFrame,
    headers: Mapping[str, str] | None = None,
    *,
    digits: int = 2,
    scale: float = 1.0,
    caption: str | None = None,
    drop: tuple[str, ...] = ("index",),
) -> Table:
    """A :class:`Table` of ``frame`` for a reader.

    Index levels become ordinary columns (no index is shown); columns ``x_mean``/``x_std`` (or
    ``"x mean"``/``"x std"``, or ``mean``/``std``; ``x_accuracy``/``x_std`` into ``x accuracy``) merge into
    one column ``x`` of ``"mean ± std"`` cells, multiplied by ``scale``; ``headers`` renames columns (after merging) to words with units,
    and other names have their underscores replaced by spaces; floats print with ``digits``
    decimals (a column of whole numbers as integers); missing values print as :data:`MISSING`; ``drop`` lists
    columns not to show.
    """
    flat = frame.reset_index() if any(name is not None for name in frame.index.names) else frame.reset_index(drop=True)
    flat = flat.drop(columns=[c for c in drop if c in flat.columns])
    merged = _merge_pairs(flat, digits, scale)
    headers = dict(headers or {})
    text = pd.DataFrame({headers.get(str(c), _words(c)): _column_text(merged[c], digits) for c in merged.columns})
    return Table(text, caption)


def _column_text(column: pd.Series, digits: int) -> list[str]:
    """Cells of one column; a float column whose values are all whole numbers prints as integers."""
    present = [v for v in column if not _missing(v)]
    whole = bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                                  for v in present)
    if whole:
        return [MISSING if _missing(v) else str(int(v)) for v in column]
    return [_cell(v, digits) for v in column]


def paired_effects(
    effects: Mapping[object, Effect],
    key_headers: Sequence[str],
    *,
    caption: str | None = None,
    p_digits: int = 3,
    seeds: bool = True,
) -> Table:
    """A :class:`Table` of paired effects (:class:`kdcourse.stats.Effect`, in points), one row each.

    Each key of ``effects`` (a tuple for several key columns) fills the columns ``key_headers``;
    then come the difference (mean ± std of the per-seed differences), its 95 % interval, the
    paired t-test's p-value with ``p_digits`` significant digits, the number of seeds (unless
    ``seeds`` is false) and the verdict."""
    rows = []
    for key, effect in effects.items():
        row = dict(zip(key_headers, key if isinstance(key, tuple) else (key,)))
        row["difference (points, mean ± std over seeds)"] = f"{signed(effect.mean)} ± {effect.std:.2f}"
        row["95 % interval (points)"] = f"{signed(effect.low)} to {signed(effect.high)}"
        row["p (paired t)"] = f"{effect.p_value:.{p_digits}g}"
        if seeds:
            row["seeds"] = effect.n
        rows.append({**row, "verdict": effect.verdict})
    return readable(pd.DataFrame(rows), caption=caption)
