"""The tables and sentences of the subclass distillation chapter (:mod:`kdcourse.studies.mnist_subclass`).

Tables of teachers, students and learned subclasses, paired comparisons by seed, the record that the
chapter saves, and the sentences of the chapter whose numbers come from the results. Every function
takes the study's rows (``teachers``, ``students``: one row per seed and teacher or arm, accuracies as
fractions), so it renders the recorded full run and a live run alike. The chapter's figures are in
:mod:`kdcourse.studies.mnist_subclass_figures` and its closing findings in
:mod:`kdcourse.studies.mnist_subclass_lessons`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdcourse import models, stats
from kdcourse.course import findings, tables
from kdcourse.course.findings import in_words
from kdcourse.kd.subclass import MNIST_SUBCLASSES_PER_CLASS
from kdcourse.studies.common import json_records
from kdcourse.studies.mnist_subclass import (
    TEACHERS,
    SubclassConfig,
    SubclassOutcome,
    arm_summary,
    paired_against,
)

__all__ = [
    "NAME", "NMI_TABLE", "KD", "CONTROL", "LEARNED", "KNOWN", "TEN_KD", "SHORT", "BINARY_PAIRS", "TEN_PAIRS",
    "TEACHER_PAIRS", "OWN_SHARE", "SMOKE_IMAGES", "teacher_table", "nmi_table", "binary_regimes", "analyse", "teacher_display",
    "nmi_display", "student_display", "comparison_rows", "comparison_table", "by_seed", "arms_by_seed",
    "compare_arms", "compare_teachers", "show_smoke_run", "finding_rows", "training_labels", "experiment_text",
    "rule_text", "subclass_name", "DigitMatch", "digit_match", "ten_class_text", "result_record",
]

NAME = "mnist_subclass"
NMI_TABLE = "Learned subclasses against digits"
KD, CONTROL, LEARNED, KNOWN, TEN_KD = (
    "KD from the binary teacher", "KD from the learned teacher's class logits", "learned-subclass KD",
    "known-subclass KD", "KD from the digit teacher",
)
# the short names of the arms in the comparisons
SHORT = {"no KD": "no KD", KD: "conventional KD", CONTROL: "control", LEARNED: "learned subclasses",
         KNOWN: "known subclasses", TEN_KD: "conventional KD"}
# (arm, baseline) pairs compared on each task
BINARY_PAIRS = [(KD, "no KD"), (LEARNED, "no KD"), (KNOWN, "no KD"), (LEARNED, KD), (KNOWN, KD), (KNOWN, LEARNED),
                (CONTROL, "no KD"), (CONTROL, KD), (LEARNED, CONTROL)]
TEN_PAIRS = [(TEN_KD, "no KD"), (LEARNED, "no KD"), (LEARNED, TEN_KD), (CONTROL, TEN_KD), (LEARNED, CONTROL)]
TEACHER_PAIRS = [  # (label, accuracy column, teacher, baseline teacher)
    ("digits − binary, on 0–4 / 5–9", "binary_test_accuracy", "digits", "binary"),
    ("binary learned − binary, on 0–4 / 5–9", "binary_test_accuracy", "binary learned", "binary"),
    ("ten-class learned − digits, on the digits", "test_accuracy", "ten-class learned", "digits"),
]
# a digit "has a subclass of its own" when this share of its test images goes to a subclass that no
# other digit mainly uses
OWN_SHARE = 0.8
SMOKE_IMAGES = findings.Notice(
    "smoke", "Smoke run: an illustration only.",
    "These images come from the smoke run's teacher (trained on a few hundred images for one "
    "epoch): the recorded run keeps no images, so these are not the subclasses described above.",
)


# --- tables -------------------------------------------------------------------------------------

def teacher_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per teacher: test accuracy (%) on its own task and read as a 0–4 / 5–9 classifier, mean and std over seeds."""
    return rows.groupby("teacher", sort=False).agg(
        outputs=("outputs", "first"),
        task=("task", "first"),
        test_accuracy=("test_accuracy", lambda v: 100 * v.mean()),
        test_std=("test_accuracy", lambda v: 100 * v.std(ddof=1)),
        binary_accuracy=("binary_test_accuracy", lambda v: 100 * v.mean()),
        binary_std=("binary_test_accuracy", lambda v: 100 * v.std(ddof=1)),
    )


def nmi_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per learned teacher: NMI of its subclasses with the digits (mean, std over seeds) and the mean
    smallest and largest share of the test images in one subclass (fractions)."""
    return rows.groupby("teacher", sort=False).agg(
        nmi_mean=("nmi_with_digits", "mean"), nmi_std=("nmi_with_digits", "std"),
        smallest_share=("smallest_share", "mean"), largest_share=("largest_share", "mean"),
    )


def binary_regimes(students: pd.DataFrame) -> list[str]:
    """The regimes of the binary task's students in training order (all labels, then few)."""
    return list(dict.fromkeys(students[students.task == "binary"].regime))


def analyse(students: pd.DataFrame) -> dict:
    """Arm summary (:func:`~kdcourse.studies.mnist_subclass.arm_summary`), the binary task's regimes in
    training order, and paired differences in points: binary arms against no KD (``paired``) and against
    conventional KD (``against_kd``) per regime, ten-class arms against conventional KD (``ten``)."""
    regimes = binary_regimes(students)
    return {
        "summary": arm_summary(students),
        "regimes": regimes,
        "paired": {regime: paired_against(students, "binary", regime, "no KD") for regime in regimes},
        "against_kd": {regime: paired_against(students, "binary", regime, KD) for regime in regimes},
        "ten": paired_against(students, "ten-class", "all labels", TEN_KD),
    }


def teacher_display(summary: pd.DataFrame, caption: str) -> tables.Table:
    """:func:`teacher_table` for a reader."""
    frame = summary.rename(columns={"test_accuracy": "test_mean", "binary_accuracy": "binary_mean"})
    return tables.readable(frame, {"test": "test accuracy on its task (%)", "binary": "read as 0–4 / 5–9 (%)"},
                           caption=caption)


def nmi_display(frame: pd.DataFrame, caption: str) -> tables.Table:
    """:func:`nmi_table` for a reader, shares in percent."""
    shares = frame.assign(smallest_share=100 * frame.smallest_share, largest_share=100 * frame.largest_share)
    return tables.readable(shares, {"nmi": "NMI with the digits", "smallest_share": "smallest subclass (% of test images)",
                                    "largest_share": "largest subclass (% of test images)"}, caption=caption)


def student_display(summary: pd.DataFrame, caption: str) -> tables.Table:
    """:func:`~kdcourse.studies.mnist_subclass.arm_summary` for a reader."""
    return tables.readable(summary, {"mean ± std": "test accuracy (%)"}, caption=caption)


# --- paired comparisons -------------------------------------------------------------------------

def comparison_rows(items: list[tuple[str, pd.Series, pd.Series]]) -> tuple[pd.DataFrame, dict[str, stats.Effect]]:
    """``(label, a, b)`` with accuracies (fractions) indexed by seed → one row per paired difference a − b
    (in points, as text), and the effects by label."""
    rows, found_effects = [], {}
    for label, a, b in items:
        effect = stats.paired_effect(a, b)
        per_seed = (100 * (a - b)).dropna()
        found_effects[label] = effect
        rows.append({"comparison": label, "difference": f"{stats.signed(effect.mean)} ± {effect.std:.2f}",
                     "95 % interval": f"{stats.signed(effect.low)} to {stats.signed(effect.high)}",
                     "p": f"{effect.p_value:.2g}", "per seed": ", ".join(stats.signed(v) for v in per_seed),
                     "verdict": effect.verdict})
    return pd.DataFrame(rows), found_effects


def comparison_table(rows: pd.DataFrame, caption: str) -> tables.Table:
    """:func:`comparison_rows` for a reader."""
    return tables.readable(rows, {"difference": "difference (points), mean ± std", "p": "paired t p",
                                  "per seed": "per seed (points)"}, caption=caption)


def by_seed(rows: pd.DataFrame, index: str, value: str = "test_accuracy") -> pd.DataFrame:
    """Accuracies (fractions) with one row per seed and one column per ``index`` value (arm or teacher)."""
    return rows.pivot(index="seed", columns=index, values=value)


def arms_by_seed(rows: pd.DataFrame, task: str, regime: str) -> pd.DataFrame:
    """:func:`by_seed` of the student arms of one task and regime."""
    return by_seed(rows[(rows.task == task) & (rows.regime == regime)], "arm")


def compare_arms(rows: pd.DataFrame, task: str, regime: str,
                 pairs: list[tuple[str, str]]) -> tuple[pd.DataFrame, dict[str, stats.Effect]]:
    """:func:`comparison_rows` of the ``(arm, baseline)`` pairs of one task and regime, labelled by :data:`SHORT`."""
    wide = arms_by_seed(rows, task, regime)
    return comparison_rows([(f"{SHORT[arm]} − {SHORT[baseline]}", wide[arm], wide[baseline]) for arm, baseline in pairs])


def compare_teachers(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, stats.Effect]]:
    """:func:`comparison_rows` of the :data:`TEACHER_PAIRS`."""
    return comparison_rows([(label, by_seed(rows, "teacher", column)[a], by_seed(rows, "teacher", column)[b])
                            for label, column, a, b in TEACHER_PAIRS])


# --- the rows the findings come from ------------------------------------------------------------

def _contingency_json(outcome: SubclassOutcome) -> dict[str, list]:
    return {str(seed): counts.tolist() for seed, counts in outcome.contingency.items()}


def show_smoke_run(profile: str, outcome: SubclassOutcome) -> None:
    """In smoke, display this run's teacher, subclass and student tables under a label saying that they
    only prove the code runs; nothing in the full profile (its tables are the findings)."""
    if not findings.uses_recorded(profile):
        return
    from IPython.display import display

    findings.show_smoke_run(profile, teacher_display(teacher_table(outcome.teachers), "Teachers, smoke run"),
                            what="this chapter's smoke run")
    display(nmi_display(nmi_table(outcome.subclasses), "Learned subclasses against digits, smoke run"))
    display(student_display(arm_summary(outcome.students), "Students, smoke run"))


def finding_rows(profile: str,
                 outcome: SubclassOutcome) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[int, np.ndarray]]:
    """The rows the findings are drawn from: the recorded full run's in smoke, ``outcome``'s in full.

    ``(teachers, students, nmi, counts)``: one row per (seed, teacher), one per (seed, task, regime,
    arm), :func:`nmi_table`, and seed → ``(10, 10)`` contingency of the binary learned teacher."""
    teachers = findings.frame(NAME, "teachers", profile, live=outcome.teachers)
    students = findings.frame(NAME, "students", profile, live=outcome.students)
    live_nmi = {NMI_TABLE: json_records(nmi_table(outcome.subclasses))}
    nmi = pd.DataFrame(findings.value(NAME, "tables", profile, live=live_nmi)[NMI_TABLE]).set_index("teacher")
    recorded = findings.value(NAME, "contingency_binary_learned", profile, live=_contingency_json(outcome))
    counts = {int(seed): np.array(c) for seed, c in recorded.items()}
    return teachers, students, nmi, counts


# --- the experiment -----------------------------------------------------------------------------

def training_labels(described: dict, images: int) -> int:
    """Labelled training images of the students with all labels: ``train_samples`` of the configuration
    ``described``, else the ``images`` of MNIST's training partition less the validation split."""
    return described["train_samples"] or images - described["val_size"]


def experiment_text(described: dict, train_labels: int) -> str:
    """The teachers, students and budgets of the configuration ``described`` (a dict of
    :class:`~kdcourse.studies.mnist_subclass.SubclassConfig` fields), in MyST Markdown."""
    teacher_parameters = sum(p.numel() for p in models.mnist_assistant(num_outputs=10).parameters())
    binary_subclasses, ten_subclasses = MNIST_SUBCLASSES_PER_CLASS, described["ten_class_subclasses"]
    limited_labels, val_labels = described["limited_samples"], described["val_size"]
    limited_batches = math.ceil(limited_labels / described["student_batch_size"])
    return rf"""
{in_words(len(TEACHERS)).capitalize()} teachers per seed, all with the same small CNN body
({teacher_parameters:,} parameters in its ten-output form), the same {described['teacher_epochs']} epochs
and the same ±{described['teacher_shift']}-pixel shifts:

| teacher | outputs | trained on |
| --- | --- | --- |
| `digits` | 10 | the digits: the conventional ten-class teacher, and the *known-subclass* teacher of the binary task (digit $d$ is subclass $d$) |
| `binary` | 2 | 0–4 against 5–9: the conventional binary teacher |
| `binary learned` | 2 × {binary_subclasses} | 0–4 against 5–9, plus the auxiliary loss |
| `ten-class learned` | 10 × {ten_subclasses} | the digits, plus the auxiliary loss |

The auxiliary loss has weight {described['aux_weight']:g} and temperature $T = {described['aux_temperature']:g}$.
The students are the course's 784-784-784 MLP, with as many outputs as their targets. All arms of
a seed start from the same hidden-layer weights, see the same batches, and share $T = {described['temperature']:g}$,
$\alpha = {described['alpha']:g}$ and the budget ({described['student_epochs']} epochs); each keeps its best epoch
on the {val_labels:,} validation images. The binary students are trained twice: on all {train_labels:,}
training labels, and on {limited_labels:,} labels only ({described['limited_epochs']} epochs of {limited_batches}
batches), because the paper found subclass distillation most useful when the student sees few
examples. The teachers always used the whole training split. Keep in mind that the
{limited_labels:,}-label students still choose their epoch on the {val_labels:,} *labelled* validation
images: {val_labels / limited_labels:g} times as many labels as they train on. The regime measures how
well a student learns from few training labels, not how it would fare if a few labels were all one had.
"""


def rule_text(n_seeds: int) -> str:
    """The course's rule for a paired difference and how large a difference must be, in standard
    deviations of its per-seed values, to clear the noise with ``n_seeds`` seeds."""
    # any values: the ratio of the interval's half-width to the std is fixed by the count
    spread = stats.paired_effect(np.arange(n_seeds), np.zeros(n_seeds), scale=1)
    return f"""{stats.RULE} With {in_words(n_seeds)} seeds the 95 % interval is wide: a difference must be
about {(spread.high - spread.mean) / spread.std:.1f} times the standard deviation of its per-seed values to clear the noise."""


# --- the learned subclasses ---------------------------------------------------------------------

def subclass_name(k: int) -> str:
    """Subclass ``k`` of the binary learned teacher as ``"class.index"`` (``7`` → ``"1.2"``)."""
    return f"{k // MNIST_SUBCLASSES_PER_CLASS}.{k % MNIST_SUBCLASSES_PER_CLASS}"


@dataclass(frozen=True)
class DigitMatch:
    """How the binary learned teacher's subclasses cover the digits.

    ``seed``: the seed shown (the smallest); ``share_of_digit``: ``(subclasses, digits)``, the share of
    each digit's test images in each subclass (columns sum to 1) in that seed; ``usage``: ``(seeds,
    subclasses)``, the share of all test images in each subclass; ``main``: each digit's main subclass;
    ``own_digits``: digits with a subclass of their own (:data:`OWN_SHARE`); ``shared_groups``: digits
    that share a main subclass."""

    seed: int
    share_of_digit: np.ndarray
    usage: np.ndarray
    main: np.ndarray
    own_digits: list[int]
    shared_groups: list[list[int]]

    def describe(self) -> str:
        """Three lines: the range of subclass shares, each digit's main subclass, own and shared digits."""
        share = self.share_of_digit
        mains = ", ".join(f"{d} → {subclass_name(self.main[d])} ({100 * share[self.main[d], d]:.0f} %)"
                          for d in range(len(self.main)))
        shares = f"{100 * self.usage.min():.1f}–{100 * self.usage.max():.1f} %"
        return "\n".join([
            f"share of the test images per subclass, over {len(self.usage)} seeds: {shares}",
            f"seed {self.seed}, main subclass of each digit: {mains}",
            f"digits with a subclass of their own: {self.own_digits}; digits sharing a main subclass: {self.shared_groups}",
        ])


def digit_match(counts: dict[int, np.ndarray]) -> DigitMatch:
    """:class:`DigitMatch` of the contingency tables ``counts`` (seed → ``(subclasses, digits)`` counts)."""
    seed = min(counts)
    table = counts[seed]
    share_of_digit = table / np.maximum(table.sum(axis=0, keepdims=True), 1)
    usage = np.array([c.sum(axis=1) / c.sum() for c in counts.values()])
    main = share_of_digit.argmax(axis=0)
    digits, subclasses = range(table.shape[1]), range(table.shape[0])
    own = [d for d in digits if share_of_digit[main[d], d] >= OWN_SHARE and (main == main[d]).sum() == 1]
    shared = [[d for d in digits if main[d] == k] for k in subclasses if (main == k).sum() > 1]
    return DigitMatch(seed, share_of_digit, usage, main, own, shared)


# --- students -----------------------------------------------------------------------------------

def ten_class_text(teachers: pd.DataFrame) -> str:
    """Why the ten-class students' difference mixes teacher and subclasses, with the teachers' gap."""
    teacher_gap = compare_teachers(teachers)[1]["ten-class learned − digits, on the digits"]
    return f"""
The two ten-class students distil different teachers: the conventional one learns from the digit
teacher, the learned-subclass one from the ten-class learned teacher. On the digits the two teachers
differ (see the teacher tables above) by {teacher_gap.describe()}. A difference
between these students mixes the quality of the teacher with the effect of the subclasses. As on the
binary task, the control separates the two: it distils the ten-class learned teacher's ten class
probabilities (its subclass logits summed within each digit by log-sum-exp), so "control − conventional
KD" measures the change of teacher and "learned subclasses − control" the subclasses themselves.
"""


# --- the saved record ---------------------------------------------------------------------------

def _live_effects(outcome: SubclassOutcome, regimes: list[str]) -> dict[str, stats.Effect]:
    """Every paired comparison of a run, labelled by task and regime."""
    effects = {f"binary, {regime}: {label}": effect for regime in regimes
               for label, effect in compare_arms(outcome.students, "binary", regime, BINARY_PAIRS)[1].items()}
    effects |= {f"ten-class, all labels: {label}": effect
                for label, effect in compare_arms(outcome.students, "ten-class", "all labels", TEN_PAIRS)[1].items()}
    effects |= {f"teachers: {label}": effect for label, effect in compare_teachers(outcome.teachers)[1].items()}
    return effects


def _summary_text(outcome: SubclassOutcome, summary: pd.DataFrame, regimes: list[str],
                  effects: dict[str, stats.Effect], nmi: pd.DataFrame) -> str:
    """One paragraph of a run's results, for the record and the full profile's output."""
    lookup = summary.sort_index()  # sorted for fast lookups by (task, regime, arm)

    def row_text(task: str, regime: str, arm: str) -> str:
        row = lookup.loc[(task, regime, arm)]
        return f"{row['mean']:.2f} ± {row['std']:.2f} %"

    binary_nmi = nmi.loc["binary learned"]
    binary = [
        (f"Binary 0–4/5–9, {regime}: no KD {row_text('binary', regime, 'no KD')}, conventional KD "
         f"{row_text('binary', regime, KD)}, learned-subclass KD {row_text('binary', regime, LEARNED)} "
         f"(vs conventional {effects[f'binary, {regime}: learned subclasses − conventional KD'].describe()}), "
         f"known-subclass KD {row_text('binary', regime, KNOWN)} "
         f"(vs conventional {effects[f'binary, {regime}: known subclasses − conventional KD'].describe()}).")
        for regime in regimes
    ]
    ten = (f"Ten-class: no KD {row_text('ten-class', 'all labels', 'no KD')}, "
           f"KD {row_text('ten-class', 'all labels', TEN_KD)}, "
           f"learned-subclass KD {row_text('ten-class', 'all labels', LEARNED)} "
           f"(vs KD {effects['ten-class, all labels: learned subclasses − conventional KD'].describe()}).")
    subclasses = ("NMI of the binary teacher's learned subclasses with the digits: "
                  f"{binary_nmi.nmi_mean:.2f} ± {binary_nmi.nmi_std:.2f}.")
    seeds = (f"Test accuracy, mean ± std over seeds {list(outcome.config.seeds)}; differences paired by seed, "
             f"in points. {stats.RULE}")
    return " ".join([*binary, ten, subclasses, seeds])


def _config_json(config: SubclassConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()}


def result_record(outcome: SubclassOutcome) -> dict:
    """The results of a run as the chapter saves them (``book/results/<profile>/mnist_subclass.json``):
    a summary paragraph, the configuration, readable tables, every row, the contingency tables, every
    paired effect and the training times (s)."""
    live = analyse(outcome.students)
    regimes = live["regimes"]
    teachers, nmi = teacher_table(outcome.teachers), nmi_table(outcome.subclasses)
    effects = _live_effects(outcome, regimes)
    tables_out = {
        "Teachers (test accuracy %)": json_records(teachers.round(3)),
        "Students (test accuracy %)": json_records(live["summary"].round(3)),
        NMI_TABLE: json_records(nmi.round(4)),
        **{f"Binary, {regime}: minus conventional KD (points)":
           json_records(live["against_kd"][regime].rename_axis("arm").round(3)) for regime in regimes},
        **{f"Binary, {regime}: minus no KD (points)":
           json_records(live["paired"][regime].rename_axis("arm").round(3)) for regime in regimes},
        "Ten-class: minus conventional KD (points)": json_records(live["ten"].rename_axis("arm").round(3)),
        "Paired differences (points), 95 % intervals and verdicts": json_records(pd.DataFrame(
            [{"comparison": label, "mean": e.mean, "std": e.std,
              "interval": f"{stats.signed(e.low)} to {stats.signed(e.high)}",
              "p": f"{e.p_value:.2g}", "verdict": e.verdict} for label, e in effects.items()]).round(3)),
    }
    return {
        "summary": _summary_text(outcome, live["summary"], regimes, effects, nmi),
        "config": _config_json(outcome.config), "tables": tables_out,
        "teachers": json_records(outcome.teachers), "students": json_records(outcome.students),
        "contingency_binary_learned": _contingency_json(outcome),
        "effects": {label: e.as_dict() for label, e in effects.items()},
        "teacher_seconds": round(outcome.teacher_seconds, 1), "student_seconds": round(outcome.student_seconds, 1),
    }
