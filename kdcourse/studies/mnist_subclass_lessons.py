"""What the subclass distillation chapter learned: its closing findings and paragraph in MyST Markdown,
from the study's rows (accuracies in %, differences in percentage points, paired by seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdcourse import stats
from kdcourse.course.findings import in_words, listing
from kdcourse.studies.mnist_subclass import arm_summary
from kdcourse.studies.mnist_subclass_findings import (
    BINARY_PAIRS,
    CONTROL,
    KD,
    KNOWN,
    LEARNED,
    OWN_SHARE,
    SHORT,
    TEN_KD,
    TEN_PAIRS,
    DigitMatch,
    arms_by_seed,
    binary_regimes,
    compare_arms,
    compare_teachers,
    digit_match,
    teacher_table,
)

__all__ = ["findings_text", "conclusion_text"]

_GLOSS = {"clears the noise": "established", "suggestive": "suggestive, not established", "within noise": "within noise"}
_GAIN = {"clears the noise": "established", "suggestive": "only suggestive", "within noise": "within noise"}


@dataclass(frozen=True)
class _Found:
    """Everything the closing findings quote, computed from the rows the findings are drawn from."""

    teachers: pd.DataFrame  # teacher_table
    summary: pd.DataFrame  # arm_summary of the students
    students: pd.DataFrame
    limited: str  # the few-label regime
    few: dict[tuple[str, str], stats.Effect]  # binary, few labels: (arm, baseline) → effect
    plenty: dict[tuple[str, str], stats.Effect]  # binary, all labels
    teacher_effects: dict[str, stats.Effect]
    ten: dict[str, stats.Effect]  # ten-class comparisons by label

    @property
    def n_seeds(self) -> str:
        return in_words(len(set(self.students.seed)))

    def accuracy(self, task: str, regime: str, arm: str) -> str:
        row = self.summary.loc[(task, regime, arm)]
        return f"{row['mean']:.2f} ± {row['std']:.2f} %"

    def teacher_accuracy(self, name: str, column: str = "binary") -> str:
        row = self.teachers.loc[name]
        mean, std = (row.binary_accuracy, row.binary_std) if column == "binary" else (row.test_accuracy, row.test_std)
        return f"{mean:.2f} ± {std:.2f} %"

    def every_seed(self, regime: str, arm: str, baseline: str) -> str:
        """``", positive on all three seeds (the smallest +0.08)"`` when it is, else nothing."""
        wide = arms_by_seed(self.students, "binary", regime)
        per_seed = 100 * (wide[arm] - wide[baseline])
        if (per_seed > 0).all():
            return f", positive on all {in_words(len(per_seed))} seeds (the smallest {stats.signed(per_seed.min())})"
        return ""


def _found(teachers: pd.DataFrame, students: pd.DataFrame) -> _Found:
    summary = arm_summary(students)
    regimes = binary_regimes(students)
    limited = next(regime for regime in regimes if regime != "all labels")

    def binary(regime: str) -> dict[tuple[str, str], stats.Effect]:
        effects = compare_arms(students, "binary", regime, BINARY_PAIRS)[1]
        return {(arm, base): effects[f"{SHORT[arm]} − {SHORT[base]}"] for arm, base in BINARY_PAIRS}

    return _Found(teacher_table(teachers), summary, students, limited, binary(limited), binary("all labels"),
                  compare_teachers(teachers)[1], compare_arms(students, "ten-class", "all labels", TEN_PAIRS)[1])


def _gains(known: str, learned: str) -> str:
    """The headline on the two subclass gains over conventional KD, from their verdicts."""
    if known == learned:
        return f"the gains of both known and learned subclasses are {_GAIN[known]}"
    return f"the gain of known subclasses is {_GAIN[known]}, that of learned subclasses {_GAIN[learned]}"


def _few_labels_bullet(f: _Found, limited_labels: int, val_labels: int) -> str:
    few, lim = f.few, f.limited
    wide = {"clears the noise": "", "suggestive": f", yet with {f.n_seeds} seeds its 95 % interval still includes zero",
            "within noise": ""}
    return f"""* **Few classes, few labels: over conventional KD, {_gains(few[(KNOWN, KD)].verdict, few[(LEARNED, KD)].verdict)}.** With
  {limited_labels:,} labelled images on the binary task, the student distilled from the learned subclasses reaches
  {f.accuracy('binary', lim, LEARNED)}, against {f.accuracy('binary', lim, KD)} with conventional distillation
  and {f.accuracy('binary', lim, 'no KD')} without. Over no KD it gains {few[(LEARNED, 'no KD')].describe()}.
  Over conventional KD it gains {few[(LEARNED, KD)].describe()}{f.every_seed(lim, LEARNED, KD)}{wide[few[(LEARNED, KD)].verdict]}. Conventional KD itself gains {few[(KD, 'no KD')].describe()}.
  Known subclasses (the digits) reach {f.accuracy('binary', lim, KNOWN)}; over conventional KD they gain
  {few[(KNOWN, KD)].describe()}, and against the learned subclasses the difference is
  {few[(KNOWN, LEARNED)].describe()}. These students still pick their best epoch on {val_labels:,} labelled
  validation images, so the regime is "few training labels", not "few labels in all".
"""


def _control_bullet(f: _Found) -> str:
    few = f.few
    learned_teacher_gap = f.teacher_effects["binary learned − binary, on 0–4 / 5–9"]
    subclass_not_teacher = few[(LEARNED, CONTROL)].clears_noise and few[(CONTROL, KD)].verdict == "within noise"
    if learned_teacher_gap.clears_noise and learned_teacher_gap.mean < 0:
        teacher_clause = "is even worse than the conventional one"
    elif learned_teacher_gap.clears_noise:
        teacher_clause = "is better than the conventional one"
    else:
        teacher_clause = "is not clearly different from the conventional one"
    return f"""* **The control{' says it is the subclasses, not the teacher' if subclass_not_teacher else ''}.** The control
  distils only the two class probabilities of the learned-subclass teacher. Over no KD it gains
  {few[(CONTROL, 'no KD')].describe()}; against conventional KD the difference is {few[(CONTROL, KD)].describe()}.
  Distilling the same teacher's ten subclass probabilities instead gains, over the control,
  {few[(LEARNED, CONTROL)].describe()}. Read as a 0–4 / 5–9 classifier, the learned-subclass teacher
  ({f.teacher_accuracy('binary learned')}) {teacher_clause} ({f.teacher_accuracy('binary')}); the difference is
  {learned_teacher_gap.describe()}. With all labels, too, the subclass student leads the control, by
  {f.plenty[(LEARNED, CONTROL)].describe()}.
"""


def _all_labels_bullet(f: _Found, train_labels: int) -> str:
    plenty = f.plenty
    hint = {"clears the noise": "", "suggestive": ": a hint worth more seeds, not a finding", "within noise": ""}
    return f"""* **With all {train_labels:,} labels: over conventional KD, {_gains(plenty[(KNOWN, KD)].verdict, plenty[(LEARNED, KD)].verdict)}.** No KD
  reaches {f.accuracy('binary', 'all labels', 'no KD')}, conventional KD {f.accuracy('binary', 'all labels', KD)},
  learned-subclass KD {f.accuracy('binary', 'all labels', LEARNED)} and known-subclass KD
  {f.accuracy('binary', 'all labels', KNOWN)}. Known subclasses add {plenty[(KNOWN, KD)].describe()}. Learned
  subclasses add {plenty[(LEARNED, KD)].describe()}{f.every_seed('all labels', LEARNED, KD)}{hint[plenty[(LEARNED, KD)].verdict]}. The exact
  subclasses (the digits) against the learned ones: {plenty[(KNOWN, LEARNED)].describe()}, so "exact beats
  learned" is {_GLOSS[plenty[(KNOWN, LEARNED)].verdict]}.
"""


def _subclasses_bullet(nmi: pd.DataFrame, match: DigitMatch) -> str:
    usage, share, main = match.usage, match.share_of_digit, match.main
    used = "every subclass is used" if usage.min() > 0 else "some subclasses are never used"
    own_text = (f"the digits {listing([str(d) for d in match.own_digits])} each get a subclass of their own "
                f"({listing([f'{100 * share[main[d], d]:.0f} %' for d in match.own_digits])} of their test images)"
                if match.own_digits else f"no digit puts {100 * OWN_SHARE:.0f} % of its test images into a subclass of its own")
    shared_text = (f"similar digits share a main subclass: {'; '.join(listing([str(d) for d in g]) for g in match.shared_groups)}"
                   if match.shared_groups else "no two digits share a main subclass")
    row = nmi.loc["binary learned"]
    return f"""* **The learned subclasses find some digits, not all.** The NMI with the digits is
  {row.nmi_mean:.2f} ± {row.nmi_std:.2f}, and {used} ({100 * usage.min():.1f}–{100 * usage.max():.0f} %
  of the test images each, over the seeds). In seed {match.seed}, {own_text}, while {shared_text}. The teacher was
  never told about digits; it found groupings that make the examples of a class distinguishable, which is what
  the auxiliary loss asks.
"""


def _ten_class_bullet(f: _Found) -> str:
    ten_gain = f.ten[f"{SHORT[LEARNED]} − {SHORT[TEN_KD]}"]
    ten_teacher_change = f.ten[f"{SHORT[CONTROL]} − {SHORT[TEN_KD]}"]
    ten_subclass_gain = f.ten[f"{SHORT[LEARNED]} − {SHORT[CONTROL]}"]
    students = f.students
    ten_subclass_outputs = int(students[(students.task == "ten-class") & (students.arm == LEARNED)].outputs.iloc[0])
    teacher_gap = f.teacher_effects["ten-class learned − digits, on the digits"]
    ten_title = {"clears the noise": "a difference that clears the noise", "suggestive": "a suggestive difference",
                 "within noise": "no gain we can see"}[ten_gain.verdict]
    single_run_gap = 0.08  # the subclass poster's subclass KD minus conventional KD, points (a single run)
    spread_word = "smaller than" if single_run_gap < ten_gain.std else "no smaller than"
    return f"""* **Ten classes: {ten_title}.** Learned-subclass KD reaches
  {f.accuracy('ten-class', 'all labels', LEARNED)} against {f.accuracy('ten-class', 'all labels', TEN_KD)} for
  conventional KD; the difference is {ten_gain.describe()}. The two students distil different teachers: the
  conventional one the digit teacher ({f.teacher_accuracy('digits', 'test')}), the subclass one the ten-class
  learned teacher ({f.teacher_accuracy('ten-class learned', 'test')}); the two teachers differ by
  {teacher_gap.describe()}. The control splits the students' difference in two. Changing the teacher alone
  (the control, {f.accuracy('ten-class', 'all labels', CONTROL)}, against conventional KD) gives
  {ten_teacher_change.describe()}; distilling that teacher's {ten_subclass_outputs} subclass probabilities instead of
  its ten class probabilities gives {ten_subclass_gain.describe()}. With ten classes the teacher's class
  probabilities already carry much of the similarity structure, and
  {{ref}}`the subclass poster <source-subclass-poster>`'s +0.08 points (like the +0.03 of
  {{ref}}`the MNIST–MHIST report <source-mnist-mhist-report>`) was a single run, {spread_word} the
  seed-to-seed spread of the paired difference here ({ten_gain.std:.2f} points).
"""


def _teachers_bullet(f: _Found) -> str:
    finer_labels = f.teacher_effects["digits − binary, on 0–4 / 5–9"]
    finer_text = {"clears the noise": "Finer labels help the teacher, too.",
                  "suggestive": f"Finer labels may help the teacher, too; {f.n_seeds} seeds do not settle it.",
                  "within noise": "Finer labels make no difference to the teacher that we can see."}[finer_labels.verdict]
    return f"""* **A side result about teachers.** Read as a 0–4 / 5–9 classifier, the teacher trained on the digits reaches
  {f.teacher_accuracy('digits')} against {f.teacher_accuracy('binary')} for the teacher trained on the two classes;
  the difference is {finer_labels.describe()}. {finer_text}
"""


def findings_text(teachers: pd.DataFrame, students: pd.DataFrame, nmi: pd.DataFrame, counts: dict[int, np.ndarray],
                  described: dict, train_labels: int) -> str:
    """The chapter's findings in MyST Markdown, from the rows of
    :func:`kdcourse.studies.mnist_subclass_findings.finding_rows`, the configuration ``described`` that
    produced them and the number of training labels
    (:func:`kdcourse.studies.mnist_subclass_findings.training_labels`)."""
    f = _found(teachers, students)
    return f"""
In the recorded full run ({f.n_seeds} seeds, appendix), on the same budget for every arm:

{_few_labels_bullet(f, described['limited_samples'], described['val_size'])}{_control_bullet(f)}{_all_labels_bullet(f, train_labels)}{_subclasses_bullet(nmi, digit_match(counts))}{_ten_class_bullet(f)}{_teachers_bullet(f)}"""


def conclusion_text(teachers: pd.DataFrame, students: pd.DataFrame) -> str:
    """The closing paragraph: what subclass distillation did where the paper expects it to help."""
    f = _found(teachers, students)
    transfer = f.few[(LEARNED, CONTROL)]
    opening = ("So subclass distillation does what the paper claims where the paper says it should: when there are few "
               "classes and the student sees few labels, the teacher's subclass distribution transfers more than its class "
               f"distribution ({transfer.short()} over the control that distils the same teacher's class probabilities, "
               f"{transfer.verdict})." if transfer.clears_noise else
               "Where the paper says subclass distillation should help most, with few classes and few labels, this "
               f"experiment finds {transfer.short()} over the control that distils the same teacher's class "
               f"probabilities: {transfer.verdict}.")
    return f"""
{opening} With plentiful labels the gain from learned subclasses over conventional KD is
{_GLOSS[f.plenty[(LEARNED, KD)].verdict]} with {f.n_seeds} seeds, and on ten classes this experiment cannot
separate it from the difference between the teachers.
"""
