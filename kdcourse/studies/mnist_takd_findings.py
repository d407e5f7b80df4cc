"""The tables, figure and sentences of the teacher-assistant chapter.

They are drawn from ``runs`` of :func:`kdcourse.studies.mnist_takd.run_study` (the live run in the
full profile, the recorded full-profile rows in a smoke build). Accuracies in % (mean ± std over
seeds), differences between students in percentage points, paired by seed; effects are keyed by
(arm, baseline), the arms named as in ``runs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from kdcourse import models, stats
from kdcourse.course import plots, tables
from kdcourse.studies import common
from kdcourse.studies.mnist_takd import TakdConfig, TakdOutcome, arm_effect, arm_summary

__all__ = [
    "LABELS", "DIRECT", "SUMMARY_HEADERS", "setup_text", "summary_table", "student_pairs", "student_effects",
    "effects_frame", "effects_table", "width_figure", "mlp_scale_text", "results_summary", "results_record",
    "lessons_text", "closing_text",
]

LABELS, DIRECT = "no KD (labels only)", "KD from the teacher"
SUMMARY_HEADERS = {
    "arm": "arm", "role": "role", "parameters": "parameters",
    "mean ± std": "test accuracy (%, mean ± std over seeds)", "seeds": "seeds",
}


def setup_text(config: Mapping[str, Any]) -> str:
    """The sizes of teacher, student and assistants of ``config`` (a :class:`TakdConfig` as a dict)."""
    teacher = models.count_parameters(models.mnist_teacher())
    student = models.count_parameters(models.mlp([config["student_hidden"]]))
    widths = list(config["assistant_hidden"])
    return (
        f"In the study this chapter reports, the teacher has {teacher:,} parameters and the "
        f"student, with **{config['student_hidden']}** hidden units, {student:,} "
        f"({teacher / student:.0f} times fewer). The assistants have "
        f"{', '.join(map(str, widths[:-1]))} and {widths[-1]} hidden units, the chain "
        f"runs {' → '.join(map(str, widths))}, and every network trains for "
        f"{config['epochs']} epochs."
    )


def summary_table(summary: pd.DataFrame) -> tables.Table:
    """:func:`arm_summary` for a reader."""
    return tables.readable(summary, SUMMARY_HEADERS, caption="Test accuracy per arm")


def student_pairs(summary: pd.DataFrame, widths: list[int]) -> list[tuple[str, str]]:
    """The comparisons the chapter judges, as (arm, baseline): every distilled student against the
    student trained on labels and against direct KD, and the chain against its last assistant alone."""
    students = [arm for arm in summary.index if summary.loc[arm, "role"] == "student" and arm != LABELS]
    pairs = [(arm, LABELS) for arm in students] + [(arm, DIRECT) for arm in students if arm != DIRECT]
    pairs += [(arm, f"via TA {widths[-1]}") for arm in students if arm.startswith("via the chain")]
    return pairs


def student_effects(runs: pd.DataFrame, widths: list[int]) -> dict[tuple[str, str], stats.Effect]:
    """The paired effect (points) of every pair of :func:`student_pairs`, keyed by (arm, baseline)."""
    pairs = student_pairs(arm_summary(runs), widths)
    return {(arm, baseline): arm_effect(runs, arm, baseline) for arm, baseline in pairs}


def effects_frame(effects: Mapping[tuple[str, str], stats.Effect]) -> pd.DataFrame:
    """One row per comparison: ``student``, ``against`` and the fields of :meth:`kdcourse.stats.Effect.as_dict`."""
    return pd.DataFrame([{"student": arm, "against": baseline, **effect.as_dict()}
                         for (arm, baseline), effect in effects.items()])


def effects_table(effects: Mapping[tuple[str, str], stats.Effect]) -> tables.Table:
    """The paired differences between students for a reader."""
    return tables.paired_effects(effects, ["student", "against"], p_digits=2, seeds=False,
                                 caption="Paired differences in test accuracy between students")


def width_figure(summary: pd.DataFrame, widths: list[int]) -> Figure:
    """Two panels against the assistant's width: the student distilled through it (with direct KD
    and labels only as lines) and the assistant itself (with the teacher as a line)."""
    fig, (left, right) = plots.panels(1, 2)
    via = [summary.loc[f"via TA {w}"] for w in widths]
    plots.errorbar_curve(widths, [v["mean"] for v in via], [v["std"] for v in via],
                         xlabel="assistant hidden units", ylabel="student test accuracy (%)",
                         title="Student distilled through one assistant", label="via TA", logx=True, ax=left)
    for arm, style in [(DIRECT, "--"), (LABELS, ":")]:
        mean = summary.loc[arm, "mean"]
        left.axhline(mean, linestyle=style, color="grey", label=f"{arm} ({mean:.2f} %)")
    ta = [summary.loc[f"TA {w} (from the teacher)"] for w in widths]
    plots.errorbar_curve(widths, [v["mean"] for v in ta], [v["std"] for v in ta],
                         xlabel="assistant hidden units", ylabel="assistant test accuracy (%)",
                         title="The assistants themselves", label="TA", logx=True, ax=right)
    teacher = summary.loc["teacher", "mean"]
    right.axhline(teacher, linestyle="--", color="grey", label=f"teacher ({teacher:.2f} %)")
    for ax in (left, right):  # a log axis over a narrow range may label no tick: name every width
        ax.legend()
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
    fig.tight_layout()
    return fig


def mlp_scale_text(distillation: Mapping[str, Any]) -> str:
    """How much the paired KD gain of the previous chapter's MLP student varies over seeds, from that
    study's recorded ``results`` (``runs`` and ``config``), and how close plain KD brings it to the top."""
    runs = pd.DataFrame(distillation["runs"])
    temperature, alpha = distillation["config"]["headline"]
    kd = runs[(runs.model == "kd") & (runs.temperature == temperature) & (runs.alpha == alpha)]
    kd = kd.set_index("seed").test_accuracy
    gain = stats.paired_effect(kd, runs[runs.model == "scratch"].set_index("seed").test_accuracy)
    return (
        "For scale, the paired KD-minus-scratch differences that the previous chapter measured for that "
        f"student vary by {gain.std:.2f} points (standard deviation over {gain.n} seeds). With so small a "
        f"teacher–student gap (the MLP student reaches {100 * kd.mean():.1f} % with plain KD) there is "
        "little for an assistant to bridge."
    )


def _accuracy(summary: pd.DataFrame, arm: str) -> str:
    return f"{summary.loc[arm, 'mean']:.2f} ± {summary.loc[arm, 'std']:.2f} %"


def results_summary(summary: pd.DataFrame, effects: Mapping[tuple[str, str], stats.Effect],
                    config: TakdConfig) -> str:
    """One paragraph of the headline numbers: test accuracy per student and its effect against direct KD."""
    def against_direct(arm: str, effect: stats.Effect) -> str:
        return (f"{arm} {_accuracy(summary, arm)} (against direct KD {stats.signed(effect.mean)} ± "
                f"{effect.std:.2f} points, 95 % interval {stats.signed(effect.low)} to "
                f"{stats.signed(effect.high)}: {effect.verdict})")

    students = [against_direct(arm, e) for (arm, baseline), e in effects.items() if baseline == DIRECT]
    return (
        f"Student 784-{config.student_hidden}-10: no KD {_accuracy(summary, LABELS)}, direct KD "
        f"{_accuracy(summary, DIRECT)}; " + "; ".join(students)
        + f". Test accuracy, mean ± std over seeds {list(config.seeds)}."
    )


def results_record(outcome: TakdOutcome) -> dict[str, Any]:
    """The JSON-ready results of a run (for :func:`kdcourse.course.results.save_results`): summary,
    configuration, the per-arm and paired-difference tables, the effects, every run's row and the times."""
    summary = arm_summary(outcome.runs)
    effects = student_effects(outcome.runs, list(outcome.config.assistant_hidden))
    frame = effects_frame(effects)
    shown = ["student", "against", "mean", "std", "low", "high", "p_value", "verdict"]
    return {
        "summary": results_summary(summary, effects, outcome.config),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(outcome.config).items()},
        "tables": {"Test accuracy per arm (%)": common.json_records(summary.round(3)),
                   "Paired differences between students (points)": common.json_records(frame[shown].round(3))},
        "effects": common.json_records(frame),
        "runs": common.json_records(outcome.runs),
        "train_seconds": round(outcome.train_seconds, 1),
        "teacher_seconds": round(outcome.teacher_seconds, 1),
    }


def _gains(effect: stats.Effect) -> bool:
    return effect.clears_noise and effect.mean > 0


def _kd_lesson(summary: pd.DataFrame, effects: Mapping[tuple[str, str], stats.Effect],
               config: Mapping[str, Any]) -> str:
    kd_vs_labels = effects[(DIRECT, LABELS)]
    labels, direct = _accuracy(summary, LABELS), _accuracy(summary, DIRECT)
    if kd_vs_labels.clears_noise and kd_vs_labels.mean < 0:
        opening = ("With this gap, distillation itself backfires: the student learns better from the "
                   f"labels alone ({labels}) than from the teacher at $T = {config['temperature']:g}$, "
                   f"$\\alpha = {config['alpha']:g}$ ({direct})")
    elif kd_vs_labels.clears_noise:
        opening = (f"Distillation from the teacher helps even this small student: {direct} against "
                   f"{labels} from the labels alone")
    else:
        opening = (f"Distillation from the teacher ({direct}) cannot be told from training on the labels "
                   f"alone ({labels})")
    return (
        f"{opening}: direct KD minus labels only is {kd_vs_labels.describe()}. Why, this chapter does not test; "
        "one possible reading is that the teacher's soft targets ask for a function a student this small "
        f"cannot represent, while $\\alpha = {config['alpha']:g}$ is the weight its loss gives them."
    )


def _helped(effects: Mapping[tuple[str, str], stats.Effect], widths: list[int]) -> list[int]:
    """Widths of the assistants whose student beats direct KD by a difference that clears the noise."""
    return [w for w in widths if _gains(effects[(f"via TA {w}", DIRECT)])]


def _assistant_lesson(summary: pd.DataFrame, effects: Mapping[tuple[str, str], stats.Effect],
                      widths: list[int]) -> str:
    helped = _helped(effects, widths)
    if not helped:
        judged = "None of the differences from direct KD clears the noise, so we cannot claim that an assistant helps."
    elif len(helped) == 1:
        judged = f"Only the {helped[0]}-unit assistant gives a difference from direct KD that clears the noise."
    else:
        judged = (f"The {', '.join(map(str, helped[:-1]))} and {helped[-1]}-unit assistants give differences from "
                  "direct KD that clear the noise.")
    per_assistant = "\n".join(
        f"  * {w} units (the assistant itself at {_accuracy(summary, f'TA {w} (from the teacher)')}, the student at "
        f"{_accuracy(summary, f'via TA {w}')}): against direct KD {effects[(f'via TA {w}', DIRECT)].describe()}; "
        f"against labels only {effects[(f'via TA {w}', LABELS)].describe()}." for w in widths)
    return (f"Through one assistant, the students compare with direct KD and with the student trained on "
            f"labels alone as follows.\n{per_assistant}\n\n  {judged}")


def _chains(summary: pd.DataFrame) -> list[str]:
    return [arm for arm in summary.index if arm.startswith("via the chain")]


def _chain_lesson(summary: pd.DataFrame, effects: Mapping[tuple[str, str], stats.Effect], chain: str,
                  widths: list[int]) -> str:
    chain_direct, chain_last = effects[(chain, DIRECT)], effects[(chain, f"via TA {widths[-1]}")]
    no_gain = not _gains(chain_direct) and not _gains(chain_last)
    return (
        f"The long chain ({chain.removeprefix('via the chain ')}, student at {_accuracy(summary, chain)}) against "
        f"direct KD: {chain_direct.describe()}; against the student distilled from the {widths[-1]}-unit assistant "
        f"trained directly on the teacher: {chain_last.describe()}. "
        + ("Distilling in several steps shows no benefit here, as Cho and Hariharan found for sequential "
           "distillation {cite}`cho2019efficacy`." if no_gain else
           "Here, unlike in Cho and Hariharan's study {cite}`cho2019efficacy`, the steps do help.")
    )


def lessons_text(summary: pd.DataFrame, effects: Mapping[tuple[str, str], stats.Effect],
                 config: Mapping[str, Any]) -> str:
    """The chapter's conclusions as a Markdown list: direct KD against labels, each assistant, the chain
    (``config``: the :class:`TakdConfig` of the study reported, as a dict)."""
    widths = list(config["assistant_hidden"])
    bullets = [_kd_lesson(summary, effects, config), _assistant_lesson(summary, effects, widths)]
    bullets += [_chain_lesson(summary, effects, chain, widths) for chain in _chains(summary)]
    return "\n".join(f"* {b}" for b in bullets)


def closing_text(summary: pd.DataFrame, effects: Mapping[tuple[str, str], stats.Effect], widths: list[int],
                 record: Mapping[str, Any]) -> str:
    """The chapter's verdict in one paragraph, with the training time of the run ``record`` (a result
    file: ``results`` and ``provenance``) that the findings come from."""
    any_helps = bool(_helped(effects, widths)) or any(_gains(effects[(c, DIRECT)]) for c in _chains(summary))
    kd_students = [arm for arm, baseline in effects if baseline == LABELS]
    labels_best = all(effects[(arm, LABELS)].mean < 0 for arm in kd_students)
    labels_clear = [arm for arm in kd_students
                    if effects[(arm, LABELS)].clears_noise and effects[(arm, LABELS)].mean < 0]
    results, provenance = record["results"], record["provenance"]
    timing = (f"Training the assistants and students of that run took {results['train_seconds'] / 60:.1f} min "
              f"and the whole chapter {provenance['wall_seconds'] / 60:.1f} min ({provenance['device']}), "
              "reusing the previous chapter's teachers.")
    verdict = ("teacher-assistant distillation shows no measurable benefit over direct distillation"
               if not any_helps else "an assistant gives a measurable benefit over direct distillation")
    tail = "."
    if labels_best and labels_clear:
        others = sorted({effects[(arm, LABELS)].verdict for arm in kd_students if arm not in labels_clear})
        rest = f" (the others: {' or '.join(others)})" if others else ""
        tail = (f", and a student this small is better off with its labels: every distilled student has a lower mean "
                f"accuracy than the one trained on labels alone, {len(labels_clear)} of {len(kd_students)} by a "
                f"difference that clears the noise{rest}.")
    return f"So on MNIST, with this student and an identical, untuned budget for every arm, {verdict}{tail} {timing}"
