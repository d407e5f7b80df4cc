"""The tables, figure and sentences of the early-stopping distillation chapter.

Everything here is drawn from one ``runs`` frame of :func:`kdcourse.studies.mnist_eskd.run_study`
(one row per trained student), so that the same code gives the numbers a run saves and the numbers
the chapter discusses (the recorded full-profile rows in a smoke build). Accuracies in the frame are
fractions; every table and sentence speaks in percent, and every paired difference in points.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from kdcourse import models, stats
from kdcourse.course import plots
from kdcourse.course.findings import in_words, listing
from kdcourse.course.tables import Table, readable
from kdcourse.stats import Effect, paired_effect, signed
from kdcourse.studies import mnist_eskd
from kdcourse.studies.common import json_records

__all__ = [
    "TEACHER_NAMES", "ACCURACY_HEADERS", "SMALL", "parameter_counts", "design_text", "live_overview",
    "accuracy_table", "analyse", "as_effect", "effect_view", "choice_line", "epoch_table",
    "epoch_figure", "rule_text", "epoch_effect_tables", "choice_text", "size_tables", "describe",
    "result_record", "conclusions",
]

# the teachers' names as the chapter writes them ("none" is the student trained on labels alone)
TEACHER_NAMES = {"cnn": "CNN", "small cnn": "small CNN", "mlp 784-64-10": "MLP 784-64-10", "none": "none (labels only)"}
ACCURACY_HEADERS = {
    "teacher_epoch": "teacher epoch", "teacher": "teacher",
    "teacher_val": "teacher validation accuracy (%)", "teacher_test": "teacher test accuracy (%)",
    "student_val": "student validation accuracy (%)", "student_test": "student test accuracy (%)",
}
SMALL = 0.1  # points: "small" differences, to show that small is not the same as noise
_SMALL_CNN, _MLP = "small cnn", "mlp 784-64-10"


def parameter_counts(sizes: list[str]) -> dict[str, int]:
    """Parameters of each teacher of ``sizes`` (names of :data:`mnist_eskd.TEACHERS`) and of the ``"student"``."""
    counts = {name: models.count_parameters(mnist_eskd.TEACHERS[name]()) for name in sizes}
    return counts | {"student": models.count_parameters(models.mnist_student())}


def design_text(config: dict[str, Any]) -> str:
    """The study's design in a paragraph, from its configuration (``vars`` of an :class:`EskdConfig`)."""
    c, parameters = config, parameter_counts(config["teacher_sizes"])
    others = " and ".join(
        f"{'an' if TEACHER_NAMES[n][0] in 'AEIMOU' else 'a'} {TEACHER_NAMES[n]} ({parameters[n]:,})"
        for n in c["teacher_sizes"] if n != "cnn"
    )
    return f"""
**Design.** For each of {in_words(len(c["seeds"]))} seeds, the CNN teacher of the MNIST chapter is trained once
for {in_words(c["teacher_epochs"])} epochs with a constant learning rate, keeping its weights after every epoch (with
a constant rate, the snapshot after epoch $e$ is exactly the teacher an $e$-epoch run would give). A
fresh 784-784-784 MLP student ({parameters["student"]:,} parameters) is distilled from each snapshot
($T = {c["temperature"]:g}$, $\\alpha = {c["alpha"]:g}$, {c["student_epochs"]} epochs, the epoch chosen on
{c["val_size"]:,} validation images held out of the training set), all from the same initial weights
and batches within a seed, so the comparisons are paired. For the second question, students are
distilled in the same way from teachers of {in_words(len(c["teacher_sizes"]))} sizes, each trained for the same
{in_words(c["teacher_epochs"])} epochs: the CNN ({parameters["cnn"]:,} parameters), {others}. A student trained on the labels alone ($\\alpha = 0$), from the same initial weights and batches,
is the baseline.
"""


def live_overview(runs: pd.DataFrame) -> Table:
    """Teacher and student test accuracy (%) per teacher and epoch, mean over the seeds of ``runs``."""
    overview = (
        runs.assign(teacher=runs.teacher.map(TEACHER_NAMES))
        .groupby(["teacher", "teacher_epoch"], sort=False)[["teacher_test_accuracy", "student_test_accuracy"]]
        .mean()
    )
    headers = {"teacher_epoch": "teacher epoch", "teacher_test_accuracy": "teacher test accuracy (%)",
               "student_test_accuracy": "student test accuracy (%)"}
    return readable(overview.mul(100), headers)


def accuracy_table(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Validation and test accuracy of teacher and student per ``by`` value (mean and std over seeds, %)."""
    columns = {"teacher_val": "teacher_val_accuracy", "teacher_test": "teacher_test_accuracy",
               "student_val": "student_val_accuracy", "student_test": "student_test_accuracy"}
    grouped = rows.groupby(by, sort=False)
    return pd.DataFrame({f"{name}_{how}": 100 * getattr(grouped[column], how)()
                         for name, column in columns.items() for how in ("mean", "std")})


def _per_seed(rows: pd.DataFrame, column: str = "student_test_accuracy") -> pd.Series:
    """One accuracy per seed (the rows of one arm), indexed by seed."""
    return rows.set_index("seed")[column]


def _size_effects(runs: pd.DataFrame, sizes: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Paired comparisons of the teachers of each size: their students against the CNN's, against the
    labels-only student and against their own teacher, and the teachers against the CNN (points)."""
    scratch = _per_seed(runs[runs.experiment == "baseline"])
    arm = {name: sizes[sizes.teacher == name] for name in names}
    student = {name: _per_seed(rows) for name, rows in arm.items()}
    teacher = {name: _per_seed(rows, "teacher_test_accuracy") for name, rows in arm.items()}
    others = [name for name in arm if name != "cnn"]
    N = TEACHER_NAMES
    comparisons = (  # (what, teacher, against, kind, a, b): a − b paired by seed
        [(f"{N[n]} student − CNN student", n, "cnn", "student", student[n], student["cnn"]) for n in others]
        + [(f"{N[n]} student − labels-only student", n, "none", "student", student[n], scratch) for n in arm]
        + [(f"{N[n]} teacher − CNN teacher", n, "cnn", "teacher", teacher[n], teacher["cnn"]) for n in others]
        + [(f"{N[n]} student − its teacher", n, "teacher", "student over teacher", student[n], teacher[n])
           for n in arm]
    )
    rows = []
    for what, name, against, kind, a, b in comparisons:
        if min(len(a), len(b)) >= 2:
            effect = paired_effect(a, b).as_dict()
        else:
            effect = {"mean": 100 * (a - b).mean(), "std": float("nan"), "verdict": None}
        rows.append({"comparison": what, "teacher": name, "against": against, "kind": kind, **effect})
    return pd.DataFrame(rows)


def analyse(runs: pd.DataFrame) -> dict[str, Any]:
    """Every table of the chapter from one runs frame.

    Keys: ``last`` (the teachers' last epoch), ``reference`` (the snapshot with the best teacher
    validation accuracy), ``chosen`` (the snapshot whose students validate best), ``scratch`` (the
    labels-only student's test accuracy per seed), ``by_epoch`` and ``by_size`` (:func:`accuracy_table`),
    ``epoch_vs_reference`` and ``epoch_vs_scratch`` (:func:`mnist_eskd.paired_against`) and
    ``size_effects`` (one paired comparison per row)."""
    epochs = runs[runs.experiment == "teacher epoch"]
    last = int(epochs.teacher_epoch.max())
    reference = mnist_eskd.chosen_epoch(runs, "teacher_val_accuracy")
    scratch = _per_seed(runs[runs.experiment == "baseline"])
    # the teachers of every size trained for the same number of epochs: the CNN's last snapshot
    last_cnn = (runs.experiment == "teacher epoch") & (runs.teacher_epoch == last)
    sizes = runs[(runs.experiment == "teacher size") | last_cnn]
    by_size = accuracy_table(pd.concat([sizes, runs[runs.experiment == "baseline"]]), "teacher")
    reference_students = _per_seed(epochs[epochs.teacher_epoch == reference])
    return {
        "last": last, "reference": reference, "chosen": mnist_eskd.chosen_epoch(runs, "student_val_accuracy"),
        "scratch": scratch,
        "by_epoch": accuracy_table(epochs, "teacher_epoch").sort_index(),
        "by_size": by_size,
        "epoch_vs_reference": mnist_eskd.paired_against(epochs, reference_students).sort_values("teacher_epoch"),
        "epoch_vs_scratch": mnist_eskd.paired_against(epochs, scratch).sort_values("teacher_epoch"),
        "size_effects": _size_effects(runs, sizes, list(by_size.index.drop("none"))),
    }


def as_effect(row: pd.Series) -> Effect:
    """The :class:`kdcourse.stats.Effect` of one row of a paired table (its ``as_dict`` fields)."""
    if pd.isna(row.get("std")) or row.get("verdict") is None:
        raise ValueError("a paired effect needs at least two seeds; run the chapter with two or more")
    fields = {f.name: row[f.name] for f in dataclasses.fields(Effect)}
    return Effect(**fields | {"n": int(fields["n"])})


def effect_view(paired: pd.DataFrame, key: str) -> pd.DataFrame:
    """A paired table for a reader: per-seed differences, mean ± std, 95 % interval, p and verdict (points)."""
    view = paired[[key]].copy()
    for column in [c for c in paired.columns if c.startswith("seed ")]:
        view[f"{column} (points)"] = paired[column].map(lambda v: signed(v) if pd.notna(v) else None)
    have = paired["std"].notna()
    low, high = paired.get("low", paired["mean"]), paired.get("high", paired["mean"])
    view["difference (points)"] = [f"{signed(m)} ± {s:.2f}" if ok else signed(m)
                                   for m, s, ok in zip(paired["mean"], paired["std"], have)]
    view["95 % interval (points)"] = [f"{signed(lo)} to {signed(hi)}" if ok else None
                                      for lo, hi, ok in zip(low, high, have)]
    view["p"] = [f"{p:.2g}" if ok else None for p, ok in zip(paired.get("p_value", paired["mean"]), have)]
    view["verdict"] = paired["verdict"]
    return view


def choice_line(found: dict[str, Any], config: dict[str, Any]) -> str:
    """One line naming the design and the two teacher epochs that validation picks."""
    return (f"teacher epochs 1–{found['last']}, seeds {list(config['seeds'])}, T = {config['temperature']}, "
            f"alpha = {config['alpha']}, {config['student_epochs']} student epochs; "
            f"reference teacher (best teacher validation accuracy): epoch {found['reference']}; "
            f"teacher epoch whose students validate best: {found['chosen']}")


def epoch_table(found: dict[str, Any], seeds: int) -> Table:
    """Teacher and student accuracy (%) per teacher snapshot, mean ± std over ``seeds`` seeds."""
    caption = f"Students of each teacher snapshot (mean ± std over {in_words(seeds)} seeds)"
    return readable(found["by_epoch"], ACCURACY_HEADERS, caption=caption)


def epoch_figure(found: dict[str, Any]) -> Figure:
    """The student's test accuracy against the teacher's epoch, with the teacher's own accuracy on a
    second axis and the labels-only student as a dotted line (%)."""
    by_epoch, scratch = found["by_epoch"], 100 * found["scratch"].mean()
    epochs = by_epoch.index.tolist()
    fig, ax = plots.panels(1, 1, height=4)
    plots.errorbar_curve(epochs, by_epoch.student_test_mean.tolist(), by_epoch.student_test_std.fillna(0).tolist(),
                         xlabel="teacher epoch (snapshot the student learns from)", ylabel="student test accuracy (%)",
                         title="Student against the teacher's training epoch (mean ± std over seeds)",
                         label="KD student", ax=ax)
    ax.axhline(scratch, color="grey", linestyle=":", label=f"student from labels only ({scratch:.2f} %)")
    ax.set_xticks(epochs)
    twin = ax.twinx()
    twin.plot(by_epoch.index, by_epoch.teacher_test_mean, color="tab:orange", marker="s", label="teacher")
    twin.set_ylabel("teacher test accuracy (%)", color="tab:orange")
    handles, labels = ax.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    ax.legend(handles + twin_handles, labels + twin_labels, loc="lower right")
    fig.tight_layout()
    return fig


def _epoch_effects(found: dict[str, Any]) -> tuple[dict[int, Effect], dict[int, Effect]]:
    """The paired effects of each snapshot's students: against the reference teacher's students (the
    reference itself left out) and against the labels-only student, by epoch."""
    vs_reference = found["epoch_vs_reference"].set_index("teacher_epoch")
    vs_scratch = found["epoch_vs_scratch"].set_index("teacher_epoch")
    against_reference = {int(e): as_effect(row) for e, row in vs_reference.iterrows() if e != found["reference"]}
    return against_reference, {int(e): as_effect(row) for e, row in vs_scratch.iterrows()}


def rule_text(found: dict[str, Any]) -> str:
    """The course's rule, and how wide its interval is with the seeds of ``found``."""
    against_scratch = _epoch_effects(found)[1]
    seeds = next(iter(against_scratch.values())).n
    some = max(against_scratch.values(), key=lambda e: e.std)
    return f"""
> {stats.RULE}

With {in_words(seeds)} seeds the interval is wide: a difference must be about {(some.high - some.mean) / some.std:.1f} times
the standard deviation of its paired differences to clear the noise. The per-seed columns show where
a verdict comes from: a difference with the same sign on every seed and little spread can clear the
noise even when it is small.
"""


def epoch_effect_tables(found: dict[str, Any]) -> tuple[Table, Table]:
    """The students of each snapshot minus the reference teacher's students, and minus the labels-only
    student, paired by seed (points)."""
    reference = found["reference"]
    against_reference = found["epoch_vs_reference"].set_index("teacher_epoch").drop(index=reference).reset_index()
    headers = {"teacher_epoch": "teacher epoch"}
    return (
        readable(effect_view(against_reference, "teacher_epoch"), headers,
                 caption=f"Student of each teacher epoch minus the student of the reference teacher "
                         f"(epoch {reference}), same seed"),
        readable(effect_view(found["epoch_vs_scratch"].reset_index(drop=True), "teacher_epoch"), headers,
                 caption="Student of each teacher epoch minus the student trained on labels only, same seed"),
    )


def choice_text(found: dict[str, Any]) -> str:
    """Which snapshot the teacher's validation accuracy picks, which one its students' picks, and
    (when they differ) the test difference between the two snapshots' students."""
    reference, chosen, last, by_epoch = found["reference"], found["chosen"], found["last"], found["by_epoch"]
    ref_note = ", the final snapshot" if reference == last else f", not the final snapshot, which is epoch {last}"
    student_val = by_epoch.loc[chosen, "student_val_mean"]
    teacher_val = by_epoch.loc[reference, "teacher_val_mean"]
    head = (f"The teacher's own validation accuracy picks epoch {reference} as the reference teacher "
            f"({teacher_val:.2f} %{ref_note})")
    if chosen == reference:
        return (f"{head}, and the students' validation accuracy picks the same snapshot ({student_val:.2f} %): "
                "the teacher to use is the reference teacher itself.")
    difference = as_effect(found["epoch_vs_reference"].set_index("teacher_epoch").loc[chosen]).describe()
    return (f"{head}; the students' validation accuracy picks epoch {chosen} ({student_val:.2f} %). On the test set, "
            f"the students of epoch {chosen} differ from the reference's by {difference}.")


def size_tables(found: dict[str, Any]) -> tuple[Table, Table]:
    """The students of the teachers of each size (%, with the teachers' parameters), and the paired
    comparisons between these arms (points)."""
    parameters = parameter_counts([name for name in found["by_size"].index if name in mnist_eskd.TEACHERS])
    by_size = found["by_size"].rename(index=TEACHER_NAMES)
    by_size.insert(0, "parameters", [f"{parameters[name]:,}" if name in mnist_eskd.TEACHERS else None
                                     for name in found["by_size"].index])
    return (
        readable(by_size, ACCURACY_HEADERS, caption=f"Students of teachers of each size, all trained for "
                                                    f"{found['last']} epochs (mean ± std over seeds)"),
        readable(effect_view(found["size_effects"], "comparison"), {"comparison": "paired comparison (test accuracy)"},
                 caption="Paired differences between the arms, same seed"),
    )


def _effect_text(row: pd.Series) -> str:
    """The effect of a paired row, or its mean alone when too few seeds give no interval."""
    if pd.isna(row.get("std")) or row.get("verdict") is None:
        return f"{signed(row['mean'])} points (too few seeds for an interval)"
    return as_effect(row).describe()


def describe(found: dict[str, Any]) -> str:
    """The headline findings of :func:`analyse`'s tables in a few sentences (test accuracy, paired by seed)."""
    ref = found["epoch_vs_reference"].set_index("teacher_epoch")
    size = found["size_effects"].set_index("comparison")
    students = found["by_epoch"].student_test_mean
    others = ref.drop(index=found["reference"])["mean"]
    worst = int(others.idxmin()) if len(ref) > 1 else found["reference"]
    best = int(others.idxmax()) if len(ref) > 1 else found["reference"]
    if best != worst:
        against = (f"the best other snapshot (epoch {best}) gives {_effect_text(ref.loc[best])}, the worst "
                   f"(epoch {worst}) {_effect_text(ref.loc[worst])}. ")
    else:
        against = f"epoch {best} gives {_effect_text(ref.loc[best])}. "
    text = (
        f"Reference teacher (best teacher validation accuracy): epoch {found['reference']}; teacher epoch whose "
        f"students validate best: {found['chosen']}. Students of the snapshots (epochs 1 to {found['last']}) reach "
        f"{students.min():.2f} to {students.max():.2f} % on test. Against the reference teacher's student, " + against
    )
    return text + " ".join(f"{what}: {_effect_text(row)}." for what, row in size.iterrows() if row.kind == "student")


def _saved_table(frame: pd.DataFrame, index: str) -> list[dict]:
    """Rows of a paired table as the result file keeps them, keyed by ``index`` (no anonymous index column):
    per-seed differences, mean and std of the paired differences, 95 % interval, p and verdict (points)."""
    keep = [c for c in frame.columns if c.startswith("seed ") or c in ("mean", "std", "low", "high", "p_value", "verdict")]
    return json_records(frame.set_index(index)[keep], digits=4)


def result_record(live: dict[str, Any], runs: pd.DataFrame, config: mnist_eskd.EskdConfig) -> dict[str, Any]:
    """What the chapter saves of a run: its summary, configuration, tables and rows (``live`` is
    :func:`analyse` of ``runs``)."""
    reference = live["reference"]
    tables = {
        "Students against the teacher's epoch (%)": json_records(live["by_epoch"].round(3)),
        f"Students against the reference teacher's student (epoch {reference}, points, paired)":
            _saved_table(live["epoch_vs_reference"], "teacher_epoch"),
        "Students against the labels-only student (points, paired)": _saved_table(live["epoch_vs_scratch"], "teacher_epoch"),
        "Students against the teacher's size (%)": json_records(live["by_size"].rename(index=TEACHER_NAMES).round(3)),
        "Paired comparisons of the teacher sizes (points)": _saved_table(live["size_effects"], "comparison"),
    }
    return {
        "summary": describe(live),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "reference_epoch": reference, "chosen_epoch": live["chosen"], "tables": tables,
        "runs": json_records(runs), "train_seconds": round(float(runs.seconds.sum()), 1),
    }


def _epochs_text(items: list[int]) -> str:
    """``"epoch 5"``, ``"epochs 1, 3 and 6"``."""
    return f"epoch {items[0]}" if len(items) == 1 else f"epochs {listing([str(e) for e in items])}"


def _numbers_text(effects: dict[int, Effect], items: list[int]) -> str:
    """``"−0.46 ± 0.16, −0.12 ± 0.01 and −0.08 ± 0.03 points"``."""
    return listing([f"{signed(effects[e].mean)} ± {effects[e].std:.2f}" for e in items]) + " points"


def _grouped_text(effects: dict[int, Effect], above: str, below: str) -> str:
    """One clause per (verdict, sign) group of epochs: which epochs, their differences (mean ± std of
    the paired differences), the verdict."""
    groups: dict[tuple[str, str], list[int]] = {}
    for e, effect in sorted(effects.items()):
        groups.setdefault(("+" if effect.mean > 0 else "−", effect.verdict), []).append(e)
    clauses = []
    for verdict in stats.VERDICTS:
        for sign, word in (("+", above), ("−", below)):
            items = groups.get((sign, verdict))
            if items:
                where = "" if verdict == "within noise" else f" {'is' if len(items) == 1 else 'are'} {word}"
                clauses.append(f"{_epochs_text(items)}{where} ({_numbers_text(effects, items)}): {verdict}")
    return "; ".join(clauses)


def _epoch_head(found: dict[str, Any], against_reference: dict[int, Effect]) -> str:
    """The first conclusion's bold head: whether an early-stopped teacher taught better."""
    by_epoch, reference, last = found["by_epoch"], found["reference"], found["last"]
    better = [e for e, effect in against_reference.items() if effect.mean > 0 and effect.clears_noise]
    if better:
        return (f"**An early-stopped teacher was the better teacher for {_epochs_text(better)}.** Against the "
                f"reference teacher's student (epoch {reference}): ")
    students, spread = by_epoch.student_test_mean, by_epoch.student_test_std
    return ("**No early-stopped teacher is a better teacher here.** The student's test accuracy rises with the "
            f"teacher's epoch, from {students.loc[1]:.2f} ± {spread.loc[1]:.2f} % (epoch 1) to "
            f"{students.loc[last]:.2f} ± {spread.loc[last]:.2f} % (epoch {last}), and against the "
            f"reference teacher's student (epoch {reference}) no snapshot does better: ")


def _small_note(found: dict[str, Any], against_reference: dict[int, Effect]) -> str:
    """The snapshots whose students differ from the reference's by less than :data:`SMALL` points on
    average but with the same sign on every seed, and why that is not enough ("" if none)."""
    vs_reference = found["epoch_vs_reference"].set_index("teacher_epoch")
    seeds = [c for c in vs_reference.columns if c.startswith("seed ")]
    consistent = []
    for e, effect in against_reference.items():
        per_seed = vs_reference.loc[e, seeds].astype(float)
        if abs(effect.mean) < SMALL and ((per_seed < 0).all() or (per_seed > 0).all()):
            consistent.append(e)
    if not consistent:
        return ""
    means = [against_reference[e].mean for e in consistent]
    side = "below" if all(m < 0 for m in means) else "above" if all(m > 0 for m in means) else "on the same side of"
    return (f" {_epochs_text(consistent).capitalize()} {'is' if len(consistent) == 1 else 'are'} {side} the "
            f"reference on every seed, by less than {SMALL:g} points on average: "
            + "; ".join(f"epoch {e}, {against_reference[e].describe()}" for e in consistent)
            + ". A small difference is not the same as noise: the rule weighs the difference against its spread"
            " over the seeds, and the same sign on every seed is not enough by itself.")


def _small_teacher_text(found: dict[str, Any], S: dict[tuple, Effect], parameters: dict[str, int], seeds: int) -> str:
    """The third conclusion: the small CNN against the CNN, as teachers and through their students."""
    by_size = found["by_size"]
    small_vs_cnn, small_teacher = S[("student", _SMALL_CNN, "cnn")], S[("teacher", _SMALL_CNN, "cnn")]
    bound = max(abs(small_vs_cnn.low), abs(small_vs_cnn.high))
    tail = ""
    if small_vs_cnn.verdict == "within noise":
        head = (f"**A teacher {parameters['cnn'] / parameters[_SMALL_CNN]:.0f} times smaller taught as well, as far "
                f"as {in_words(seeds)} seeds can tell.**")
        tail = f" Within noise is not proof of equality: the interval still allows up to {bound:.2f} points either way."
    else:
        head = f"**The teacher's size matters: the small CNN's student differs by {small_vs_cnn.short()}.**"
    if small_teacher.clears_noise and small_vs_cnn.verdict == "within noise":
        accuracy = " A clearly less accurate teacher taught as well: teacher accuracy alone does not predict the student's."
    else:
        how = "only suggestive" if small_teacher.verdict == "suggestive" else small_teacher.verdict
        accuracy = (f" Since the teachers' own difference is {how}, this comparison alone cannot show that "
                    "teacher accuracy fails to predict the student's.")
    return f"""{head} The small CNN ({parameters[_SMALL_CNN]:,} parameters, teacher {by_size.loc[_SMALL_CNN, 'teacher_test_mean']:.2f} %)
  against the CNN ({parameters['cnn']:,}, {by_size.loc['cnn', 'teacher_test_mean']:.2f} %): its student differs from the
  CNN-taught one by {small_vs_cnn.describe()}.{tail} The two teachers themselves differ by
  {small_teacher.describe()}.{accuracy} Against the labels-only student, the small CNN's student is at
  {S[("student", _SMALL_CNN, "none")].describe()}."""


def _weak_teacher_text(found: dict[str, Any], S: dict[tuple, Effect]) -> str:
    """The fourth conclusion: the MLP teacher against the CNN, the labels and its own student."""
    by_size, scratch = found["by_size"], found["scratch"]
    vs_cnn, vs_scratch, over = (S[("student", _MLP, "cnn")], S[("student", _MLP, "none")],
                                S[("student over teacher", _MLP, "teacher")])
    head = ("**A weak teacher hurts.**" if vs_scratch.mean < 0 and vs_scratch.clears_noise
            else f"**The weak teacher's student, against labels only: {vs_scratch.verdict}.**")
    return f"""{head} The MLP teacher ({by_size.loc[_MLP, 'teacher_test_mean']:.2f} %) gives a student of
  {by_size.loc[_MLP, 'student_test_mean']:.2f} ± {by_size.loc[_MLP, 'student_test_std']:.2f} %. Against the
  CNN-taught student it is at {vs_cnn.describe()}; against the student trained on labels alone
  ({100 * scratch.mean():.2f} ± {100 * scratch.std(ddof=1):.2f} %), at {vs_scratch.describe()}. Yet this student
  ends up above its own teacher: {over.describe()}."""


def conclusions(found: dict[str, Any]) -> str:
    """What the chapter learned, as a list of claims, each a paired difference with its verdict."""
    against_reference, against_scratch = _epoch_effects(found)
    size = found["size_effects"].set_index(["kind", "teacher", "against"])
    S = {key: as_effect(row) for key, row in size.iterrows()}
    parameters = parameter_counts(["cnn", _SMALL_CNN])
    last, reference = found["last"], found["reference"]
    seeds = next(iter(against_scratch.values())).n
    mechanism = (
        "The paper's effect appears when a small student cannot follow a large teacher trained to convergence on a "
        f"hard task (ImageNet); here the task is easy, the CNN teacher is trained for only {in_words(last)} epochs, "
        f"and the MLP student has more parameters ({parameters['student']:,}) than the CNN teacher "
        f"({parameters['cnn']:,})."
    )
    return f"""
Every claim below is a paired difference of test accuracy over the {in_words(seeds)} seeds of the recorded full run
(appendix), with its 95 % interval and the verdict of the course's rule.

* {_epoch_head(found, against_reference)}{_grouped_text(against_reference, "above it", "below it")}.{_small_note(found, against_reference)}
* **The teacher epoch to use, chosen on validation.** {choice_text(found)} {mechanism}
* {_small_teacher_text(found, S, parameters, seeds)}
* {_weak_teacher_text(found, S)}
* **Distillation against labels only.** Against the student trained on labels alone, the students of the CNN's
  snapshots: {_grouped_text(against_scratch, "above it", "below it")}. At the reference teacher (epoch {reference}) the gain is
  {against_scratch[reference].describe()}.
"""
