"""What a chapter presents as its findings.

A chapter always runs its study live, at the profile it was given. In the ``full`` profile that live
run *is* the finding. In the ``smoke`` profile (a few hundred images, one or two epochs) its numbers
mean nothing, so every table, figure and conclusion that states a finding is drawn from the
recorded full-profile result file instead (``book/results/full/<name>.json``), and the live output is
shown only as proof that the code runs, under a label that says so.

Typical use in a chapter::

    outcome = study.run_study(config, data, PROFILE)          # live, at PROFILE
    findings.show_smoke_run(PROFILE, study.arm_summary(outcome.runs))
    runs = findings.frame("mnist_takd", "runs", PROFILE, live=outcome.runs)
    # ... every later table and figure is drawn from ``runs``, and so is the prose:
    gain = effects.paired_effect(kd_accuracy, scratch_accuracy)
    findings.say(f"Distillation changes the student's accuracy by {gain.describe()}.")

A cell that only renders prose is tagged ``remove-input``: the book shows the sentence, a reader
of the notebook sees how it was computed.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from kdcourse.course import results

__all__ = ["Notice", "uses_recorded", "recorded", "frame", "value", "show_smoke_run", "source_note", "say", "in_words", "listing",
           "device"]

# chapters whose "recorded results" note has been shown in this kernel: once per chapter is enough
_noted: set[str] = set()


def uses_recorded(profile: str) -> bool:
    """True when the findings of a run at ``profile`` come from the recorded full-profile results (smoke)."""
    return profile != "full"


def recorded(name: str) -> dict[str, Any]:
    """The recorded full-profile file of chapter ``name``: ``{"provenance": ..., "results": ...}``.

    Raises ``FileNotFoundError`` naming the file and the command that creates it."""
    try:
        return results.load_results(name, "full")
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}. A smoke build shows the recorded full-profile findings; record them first with: "
            f"python -m kdcourse execute {name} --profile full"
        ) from None


class Notice:
    """A coloured box in a notebook (``_repr_html_``) that reads as plain text elsewhere (``__repr__``)."""

    COLOURS = {"smoke": ("#fff4e5", "#e8a33d"), "recorded": ("#e8f4fd", "#3c8dd0")}

    def __init__(self, kind: str, title: str, body: str) -> None:
        self.kind, self.title, self.body = kind, title, body

    def __repr__(self) -> str:
        return f"{self.title} {self.body}"

    def _repr_html_(self) -> str:
        background, border = self.COLOURS[self.kind]
        return (
            f'<div class="kd-{self.kind}" style="background:{background};border-left:6px solid {border};'
            f'padding:0.6em 1em;margin:0.5em 0;color:#222"><strong>{html.escape(self.title)}</strong> '
            f"{html.escape(self.body)}</div>"
        )


def source_note(name: str, profile: str) -> Notice | None:
    """A visible note naming where the findings below come from (``None`` in the full profile)."""
    if not uses_recorded(profile):
        return None
    provenance = recorded(name)["provenance"]
    body = (
        f"The tables, figures and conclusions from here on come from the recorded full-profile run "
        f"(commit {provenance['commit']}, {provenance['date'][:10]}, seeds {provenance['seeds']}, "
        f"{provenance['device']}), not from the smoke run above."
    )
    return Notice("recorded", "Recorded full-profile results.", body)


def show_smoke_run(profile: str, output: Any, what: str = "the study") -> None:
    """Display ``output`` (a table or text of the live run) under a label saying it only proves the code runs.

    In the full profile ``output`` is displayed as it is."""
    from IPython.display import display

    if uses_recorded(profile):
        display(Notice("smoke", "Smoke run: proof that the code runs.",
                       f"These numbers come from {what} on a few hundred images and one or two "
                       "epochs; they are not results and are not used below."))
    display(output)


def frame(name: str, key: str, profile: str, *, live: pd.DataFrame) -> pd.DataFrame:
    """The table ``key`` of chapter ``name`` that the findings are drawn from.

    Full profile: ``live`` itself. Smoke: the recorded full-profile rows ``results[key]`` (written by
    :func:`kdcourse.studies.common.json_records`), with the same index columns as ``live`` and the
    recorded :func:`source_note` displayed."""
    if not uses_recorded(profile):
        return live
    from IPython.display import display

    rows = recorded(name)["results"].get(key)
    if rows is None:
        raise KeyError(f"the recorded results of {name!r} hold no table {key!r}; re-record them with the full profile")
    table = pd.DataFrame(rows)
    index = [level for level in live.index.names if level is not None]
    if index and set(index) <= set(table.columns):
        table = table.set_index(index if len(index) > 1 else index[0])
    elif "index" in table.columns:
        table = table.drop(columns="index")
    if name not in _noted:
        _noted.add(name)
        display(source_note(name, profile))
    return table


def say(markdown: str) -> None:
    """Display prose whose numbers were computed from the results (MyST Markdown: math and roles work)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown))


def value(name: str, key: str, profile: str, *, live: Any) -> Any:
    """A recorded value ``results[key]`` of chapter ``name`` in smoke, ``live`` in the full profile."""
    if not uses_recorded(profile):
        return live
    return recorded(name)["results"][key]


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def in_words(n: int) -> str:
    """A small count as prose writes it: ``3`` → ``"three"``; from 13 on, digits (``"13"``)."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def listing(items: list[str]) -> str:
    """Items joined as prose lists them: ``"a"``, ``"a and b"``, ``"a, b and c"`` (``""`` for none)."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def device(name: str, profile: str) -> str:
    """The device of the run whose findings chapter ``name`` shows: the recorded full run's in smoke
    (from its provenance), this machine's in the full profile."""
    if uses_recorded(profile):
        return recorded(name)["provenance"]["device"]
    from kdcourse.provenance import device_description

    return device_description()
