"""The sentences of the MHIST chapter, each rendered from the findings of
:mod:`kdcourse.studies.mhist_findings` (and from the configuration of the study they come from), and
the reports' numbers that the chapter sets beside them."""

from __future__ import annotations

import math

import pandas as pd
import torch

from kdcourse import data, stats
from kdcourse.course import tables
from kdcourse.course.findings import in_words, listing
from kdcourse.stats import signed
from kdcourse.studies import mhist
from kdcourse.studies.mhist_findings import OWN_TEACHER, MhistFindings

__all__ = [
    "REPORTED", "team_text", "recipe_text", "sizes_text", "diagnosis_text", "votes_text", "rule_text",
    "gaps_text", "imagenet_text", "distillation_text", "best_student_text", "subclass_text", "reported_table",
    "reports_text", "poster_goal_text", "verdict_count", "conclusion_text",
]

ANNOTATORS = 7  # pathologists who labelled every MHIST image
# test AUC × 100 of the source reports (single runs), and the arm of this study that matches each model
REPORTED = pd.DataFrame([
    {"model": "teacher, pretrained", "mnist-mhist": 85.13, "poster": 89.22, "arm": "teacher"},
    {"model": "teacher with a subclass head", "mnist-mhist": float("nan"), "poster": 86.61, "arm": "teacher_known"},
    {"model": "student, pretrained, labels only", "mnist-mhist": 73.08, "poster": 77.32, "arm": "student"},
    {"model": "student, KD", "mnist-mhist": 80.09, "poster": 80.72, "arm": "kd"},
    {"model": "student, subclass KD", "mnist-mhist": 82.17, "poster": 85.28, "arm": "known_skd"},
])
REPORTED_SCRATCH_TEACHERS = {"mnist-mhist": 68.86, "poster": 73.17}  # their teachers from scratch: no arm here
REPORTS_RECIPE = {"head_epochs": 10, "finetune_epochs": 25}  # both reports: head phase, then every layer
REPORTS_STUDENT = "MobileNetV2"  # the reports' student architecture (teacher: ResNet50V2, at 224 px)
POSTER_STUDENT_PARAMETERS = 2_260_546  # the poster's MobileNetV2 student with its two-way head
PHASE_ARMS = ("teacher", "student")  # arms whose fine-tuning gain the chapter judges (over seeds)
MNIST_MHIST = "{ref}`The MNIST–MHIST report <source-mnist-mhist-report>`"  # the names of the sources page
POSTER = "{ref}`The subclass poster <source-subclass-poster>`"


def _short(name: str) -> str:
    return mhist.SHORT_NAMES.get(name, name)


def team_text(study: dict) -> str:
    """Which networks the recorded study uses, and why this team."""
    team = mhist.TEAMS[study["team"]]
    also = " (also a member)" if team.assistant in team.members else ""
    text = (f"The study reported here uses the `{study['team']}` team: an ensemble of "
            f"{listing([_short(n) for n in team.members])}, the assistant {_short(team.assistant)}{also} and "
            f"the student {_short(team.student)}.")
    if study["team"] != "offline":
        return text + " Its weights are timm's releases, which need the network or a filled cache."
    reports = [_short(n) for n in team.members if _short(n) == REPORTS_STUDENT]
    return text + (
        " Why these networks? They need no network access: their weights are Google's 8-bit TensorFlow Lite "
        "releases of the MobileNets, dequantised to floating point and converted to PyTorch, files that can "
        "be copied to any machine; and the whole study runs on a CPU. "
        + (f"The {reports[0]} member is the reports' student architecture: what they distilled into is one "
           "of our teachers, and our student is smaller still." if reports else ""))


def recipe_text(study: dict) -> str:
    """The two phases, their epochs and learning rates, the grid, and how the reports' recipe differed."""
    grid = (f"T ∈ {{{', '.join(f'{t:g}' for t in study['temperatures'])}}} and "
            f"α ∈ {{{', '.join(f'{a:g}' for a in study['alphas'])}}}")
    ours, theirs = study, REPORTS_RECIPE
    return (
        f"In the study reported here the images are {study['size']} px, in batches of {study['batch_size']}, "
        f"on seeds {', '.join(map(str, study['seeds']))}. The head phase trains the new head alone for "
        f"{ours['head_epochs']} epochs (AdamW, learning rate {ours['head_lr']:g}); fine-tuning then trains "
        f"everything after the {study['split_reduction']}× downsampling (the last stage) with the head for "
        f"{ours['finetune_epochs']} epochs (learning rate {ours['finetune_lr']:g}, cosine decay). The "
        f"temperature and weight of distillation are chosen on validation for each teacher over {grid}; "
        "the subclass and assistant arms use the pair chosen for the single teacher.\n\n"
        f"The reports trained their head for {theirs['head_epochs']} epochs and then unfroze *every* layer "
        f"for {theirs['finetune_epochs']} epochs. Ours differs in three ways: only the last stage is unfrozen, every "
        f"BatchNorm stays frozen with its ImageNet statistics, and the phases last {ours['head_epochs']} and "
        f"{ours['finetune_epochs']} epochs. Fewer trainable layers leave less to overfit on a few thousand "
        "images, and the cached inputs of the frozen stages make a fine-tuning epoch cheap enough for a CPU."
    )


def sizes_text(sizes: pd.DataFrame) -> str:
    """Which resolution validation chose, with the mean validation and test AUC at each size."""
    means = sizes.groupby("size")[["val_auc", "test_auc"]].mean()
    val = listing([f"{v:.3f} at {s} px" for s, v in means.val_auc.items()])
    test = listing([f"{v:.3f}" for v in means.test_auc])
    return (f"Averaged over the {in_words(sizes.network.nunique())} networks and {in_words(sizes.seed.nunique())} "
            f"seeds, the head phase reaches a validation AUC of {val}, so the study trains at "
            f"{mhist.chosen_size(sizes)} px. The test AUCs, which played no part in the choice, are {test}.")


def diagnosis_text(diagnosis: pd.DataFrame, study: dict) -> str:
    """The spread of the untrained head's logits from each start, and where each start ends against the probe."""
    by = diagnosis.groupby("start")[["logit_std", "val_auc", "test_auc"]].mean()
    timm, fan, probe = by.loc["timm"], by.loc["fan-in"], by.loc["probe"]
    classes = len(data.MHIST_CLASSES)
    return (
        f"For our {in_words(classes)} classes timm's range is ±{1 / math.sqrt(classes):.2f}. On the pooled "
        f"features of the training images the untrained head's logits then have a standard deviation of "
        f"{timm.logit_std:.1f} (mean over networks and seeds), against {fan.logit_std:.2f} at the fan-in "
        f"scale. After {study['head_epochs']} epochs of the head phase, timm's start reaches a validation AUC "
        f"of {timm.val_auc:.3f} and a test AUC of {timm.test_auc:.3f}; the fan-in start {fan.val_auc:.3f} "
        f"and {fan.test_auc:.3f}; the linear probe {probe.val_auc:.3f} and {probe.test_auc:.3f}. On test, "
        f"timm's start ends {signed(100 * (timm.test_auc - probe.test_auc))} points from the probe and the "
        f"fan-in start {signed(100 * (fan.test_auc - probe.test_auc))}."
    )


def votes_text() -> str:
    """How the votes make the label and the four known subclasses (read from
    :func:`kdcourse.studies.mhist.vote_subclasses`)."""
    votes = torch.arange(ANNOTATORS + 1)
    labels = (votes > ANNOTATORS / 2).long()
    subclasses = mhist.vote_subclasses(labels, votes)
    names = ("clear HP", "borderline HP", "borderline SSA", "clear SSA")
    bins = [f"{name} ({int(votes[subclasses == k].min())}–{int(votes[subclasses == k].max())} votes for SSA)"
            for k, name in enumerate(names)]
    least = int(votes[labels == 1].min())
    return (f"An image is labelled SSA when at least {least} of the {ANNOTATORS} pathologists chose SSA, so an "
            f"image with {least} SSA votes and one with {ANNOTATORS} share one label, SSA, although the first "
            f"nearly went the other way. Our known subclasses split each class in two by its votes: "
            f"{listing(bins)}.")


def rule_text(f: MhistFindings) -> str:
    """The course's rule for one interval, the joint rule for a claim, and what each kind of noise measures."""
    return (f"{stats.RULE} {stats.JOINT_RULE} Over seeds, each difference pairs two networks of the same seed; "
            "over test images, a bootstrap resamples the test images and recomputes the seed-averaged AUC "
            f"difference, so it measures how much the claim depends on these particular {len(f.labels)} test "
            "images. Every table below shows both intervals, and its last column is the claim's verdict.")


def gaps_text(f: MhistFindings) -> str:
    """The single teacher, the ensemble and the student on labels, and the gaps between them."""
    members = f.runs.arm[f.runs.arm.str.startswith(mhist.MEMBER)].nunique()
    return (
        f"The single teacher is the member of best mean validation AUC, {f.teacher_name()}. It reaches a "
        f"test AUC of {f.auc('teacher')}, the ensemble of all {in_words(members)} members {f.auc('ensemble')} "
        f"and the student on labels alone {f.auc('student')}. The gap from the single teacher to the student "
        f"is {f.verdict('teacher', 'student')}; from the ensemble, {f.verdict('ensemble', 'student')}; and the "
        f"ensemble against the single teacher, {f.verdict('ensemble', 'teacher')}. A teacher can only hand "
        "down what it knows beyond its student: where the gap is within noise there is little to distil."
    )


def _seconds(f: MhistFindings, arm: str) -> float:
    """Mean training time of ``arm`` per seed (s)."""
    return float(f.runs[f.runs.arm == arm].train_seconds.mean())


def imagenet_text(f: MhistFindings, study: dict, costs: pd.DataFrame) -> str:
    """What ImageNet weights and the fine-tuning phase add to the student, and why no teacher is trained
    from scratch (``costs``: rows of :func:`kdcourse.studies.mhist_findings.network_costs`)."""
    phase = {arm: mhist.phase_effect(f.runs, arm) for arm in PHASE_ARMS}
    macs = costs.set_index("name").MACs
    ratio = macs[f.teacher_network] / macs[mhist.TEAMS[study["team"]].student]
    return (
        f"With ImageNet weights the student reaches {f.auc('student')}; from scratch, trained for "
        f"{study['head_epochs'] + study['finetune_epochs']} epochs, as many as both pretrained phases together, "
        f"{f.auc('student_scratch')}: {f.verdict('student', 'student_scratch')}. Fine-tuning the last stage "
        f"adds {phase['student'].describe()} to the head phase alone for the student and "
        f"{phase['teacher'].describe()} for the single teacher (over seeds alone: both phases of a network "
        "are scored on the same test images).\n\n"
        "This study trains no teacher from scratch. At an equal budget it would cost more than the rest of "
        "the study together on a CPU: a network from scratch runs every layer forward and backward on every "
        "augmented image, where a pretrained arm trains its last stage on cached inputs. The student from "
        f"scratch took {_seconds(f, 'student_scratch') / 60:.1f} minutes per seed against "
        f"{_seconds(f, 'student') / 60:.1f} for its pretrained twin, and the single teacher needs {ratio:.1f} "
        "times the student's multiply-accumulates per image. The ImageNet question is answered for the student."
    )


def _best_cell(f: MhistFindings, teacher: str) -> float:
    """The best mean validation AUC over the (T, α) grid of ``teacher``."""
    rows = f.grid[f.grid.teacher == teacher]
    return float(rows.groupby(["temperature", "alpha"]).val_auc.mean().max())


def distillation_text(f: MhistFindings) -> str:
    """The (T, α) chosen per teacher, whether validation preferred labels alone to every cell, and KD,
    KD from the ensemble and KD through the assistant against their baselines."""
    student = f.mean("student", "val_auc")
    cells = {teacher: _best_cell(f, teacher) for teacher in ("teacher", "ensemble")}
    chosen = [f"the {mhist.arm_label(t).split(' (')[0]}'s at T = {f.chosen[t]['temperature']:g}, "
              f"α = {f.chosen[t]['alpha']:g} ({cells[t]:.3f})" for t in cells]
    beaten = [f"the {mhist.arm_label(t).split(' (')[0]}'s grid" for t, cell in cells.items() if student >= cell]
    which = "both grids" if len(beaten) == len(cells) > 1 else listing(beaten)
    teacher = "either teacher" if which == "both grids" else "that teacher"
    preference = (f" Validation prefers the labels-only student to every cell of {which}: by the chapter's own "
                  f"rule of selection, the student would not be distilled from {teacher} at all. Each KD arm "
                  "is still trained at its grid's best cell, so that the test can confirm this or not."
                  if beaten else "")
    return (
        f"On validation the best grid cells are {listing(chosen)}; the labels-only student scores "
        f"{student:.3f}.{preference} On test, KD from the single teacher gives {f.auc('kd')} against "
        f"{f.auc('student')} on labels alone: {f.verdict('kd', 'student')}. KD from the ensemble gives "
        f"{f.auc('kd_ensemble')}: against labels alone {f.verdict('kd_ensemble', 'student')}; against KD from "
        f"the single teacher {f.verdict('kd_ensemble', 'kd')}. Through the assistant the student reaches "
        f"{f.auc('takd')}: against direct KD {f.verdict('takd', 'kd')}."
    )


def best_student_text(f: MhistFindings) -> str:
    """The best distilled student on validation, its own teacher, and its test AUC against labels alone."""
    best = f.best_distilled()
    teacher = OWN_TEACHER[best]
    return (
        f"Which distilled student is best? Chosen like everything else here, on mean validation AUC, it is "
        f"*{mhist.arm_label(best)}* ({f.mean(best, 'val_auc'):.3f} on validation). Its own teacher, "
        f"*{mhist.arm_label(teacher)}*, reaches a test AUC of {f.auc(teacher)}; the student itself {f.auc(best)}, "
        f"against {f.auc('student')} on labels alone: {f.verdict(best, 'student')}."
    )


def subclass_text(f: MhistFindings) -> str:
    """Known and learned subclasses against KD and against their controls, and the known-subclass
    teacher against the plain one, beside the poster's single run."""
    with_sub, without = REPORTED.set_index("arm").poster[["teacher_known", "teacher"]]
    same = (f.mean("teacher_known") > f.mean("teacher")) == (with_sub > without)
    return (
        f"Known subclasses from the votes give {f.auc('known_skd')}: against KD {f.verdict('known_skd', 'kd')}; "
        f"against KD from the same teacher's class logits {f.verdict('known_skd', 'known_control')}. Learned "
        f"subclasses give {f.auc('learned_skd')}: against KD {f.verdict('learned_skd', 'kd')}; against their "
        f"control {f.verdict('learned_skd', 'learned_control')}.\n\nThe subclass teachers themselves: with a "
        f"head on the known subclasses the single teacher reaches {f.auc('teacher_known')}, against "
        f"{f.auc('teacher')} with its plain head: {f.verdict('teacher_known', 'teacher')}. The poster's single "
        f"run went {'the same way' if same else 'the other way'}: {with_sub:.2f} with subclasses against "
        f"{without:.2f} without (test AUC × 100)."
    )


def reported_table(f: MhistFindings) -> tables.Table:
    """The reports' test AUC beside this study's (× 100), with the arm of this study each row compares."""
    reported = REPORTED.copy()
    reported["this chapter"] = [f"{100 * f.mean(a):.1f} ± {100 * f.summary.loc[a, 'test_auc std']:.1f}"
                                for a in reported.arm]
    reported["arm"] = reported.arm.map(mhist.arm_label)
    return tables.readable(reported, {"mnist-mhist": "MNIST–MHIST report (single run)",
                                      "poster": "subclass poster (single run)", "arm": "our arm",
                                      "this chapter": "this chapter (mean ± std over seeds)"},
                           digits=2, caption="Test AUC × 100")


def reports_text(study: dict) -> str:
    """How the reports' setting and mistakes differ from this study's, and which of their rows has no arm here."""
    team = mhist.TEAMS[study["team"]]
    r = REPORTED.set_index("arm")[["mnist-mhist", "poster"]]
    kd_gain, skd_gain = r.loc["kd"] - r.loc["student"], r.loc["known_skd"] - r.loc["kd"]
    scratch = REPORTED_SCRATCH_TEACHERS
    return (
        f"Our networks are not theirs: the reports distilled a ResNet50V2 into a {REPORTS_STUDENT} at 224 px; "
        f"this record's single teacher is one of {listing([_short(n) for n in team.members])} and its student "
        f"a {_short(team.student)}, at {study['size']} px. Their teacher stands beside our single teacher and "
        f"their KD student beside ours distilled from it. Their teachers trained from scratch "
        f"({scratch['mnist-mhist']:.2f} and {scratch['poster']:.2f}) have no row, since this study trains no "
        f"teacher from scratch. {POSTER} does not say how it made its subclasses; its "
        f"subclass rows stand beside our known-subclass arms for want of a better match.\n\n"
        "Their numbers also come with mistakes that make them incomparable in detail. Both picked the best "
        f"epoch on the test set and report one run each. {MNIST_MHIST} computed the AUC per test "
        "batch and averaged it (an AUC ranks the whole test set; batch AUCs are noisier and biased), kept "
        "training one already-trained student across its sweep, passed raw teacher logits as labels in its "
        f"TAKD loss, and weighted its subclass loss to almost nothing. {POSTER} combined subclass "
        "logits by summing them rather than by log-sum-exp. Their headline gaps (KD over labels of "
        f"{kd_gain['mnist-mhist']:.2f} and {kd_gain['poster']:.2f} points, subclass KD over KD of "
        f"{skd_gain['mnist-mhist']:.2f} and {skd_gain['poster']:.2f}) have no interval; ours do."
    )


def _student_parameters(costs: pd.DataFrame, study: dict) -> int:
    return int(costs.set_index("name").parameters[mhist.TEAMS[study["team"]].student])


def poster_goal_text(f: MhistFindings, study: dict, costs: pd.DataFrame) -> str:
    """The best distilled student against the poster's subclass-distilled student, and their sizes."""
    best, poster = f.best_distilled(), REPORTED.set_index("arm").poster["known_skd"] / 100
    params = _student_parameters(costs, study)
    return (
        f"The goal the poster sets: its subclass-distilled {REPORTS_STUDENT} reached a test AUC of {poster:.3f} "
        f"with {POSTER_STUDENT_PARAMETERS:,} parameters. Our best distilled student has {params:,} parameters, "
        f"{100 * params / POSTER_STUDENT_PARAMETERS:.0f} % of that, and reaches {f.auc(best)}, "
        f"{signed(100 * (f.mean(best) - poster))} points from the poster's number. That number is one run "
        "chosen on the test set, so the comparison speaks about the size of the student more than about which "
        "run is better."
    )


def verdict_count(f: MhistFindings) -> int:
    """How many verdicts the chapter draws: every claim of its comparison tables and the fine-tuning gains."""
    return len(f.comparison) + len(PHASE_ARMS)


def conclusion_text(f: MhistFindings, study: dict, sizes: pd.DataFrame, diagnosis: pd.DataFrame,
                    costs: pd.DataFrame) -> str:
    """The chapter's conclusions, as a bulleted list."""
    test = diagnosis.groupby("start").test_auc.mean()
    best, n = f.best_distilled(), verdict_count(f)
    short = {pair: f"{signed(f.claim(*pair)['seeds mean'])} points ({f.claim(*pair)['verdict']})"
             for pair in (("teacher", "student"), ("ensemble", "student"), ("student", "student_scratch"),
                          (best, "student"))}
    return (
        f"* A new head must start small: started as timm draws it, the head phase ends "
        f"{signed(100 * (test['timm'] - test['probe']))} points of test AUC from a linear probe on the same "
        f"features; at the fan-in scale {signed(100 * (test['fan-in'] - test['probe']))}. Compare a head with "
        f"a probe before tuning anything else. Validation chose {mhist.chosen_size(sizes)} px.\n"
        f"* The gap from the single teacher ({f.teacher_name()}) to the student is "
        f"{short['teacher', 'student']}, from the ensemble {short['ensemble', 'student']}.\n"
        f"* ImageNet weights are worth {short['student', 'student_scratch']} to the student.\n"
        f"* The best distilled student on validation, *{mhist.arm_label(best)}*, differs from labels alone "
        f"by {short[best, 'student']}, with {_student_parameters(costs, study):,} parameters.\n"
        f"* This chapter draws {n} verdicts: {len(f.comparison)} claims by the joint rule and "
        f"{in_words(len(PHASE_ARMS))} fine-tuning gains over seeds. At the 95 % level about one comparison in "
        f"twenty clears the noise by chance when nothing changes, so about {n / 20:.1f} of them could do so "
        "here by luck alone: a lone \"clears the noise\" among many is weaker evidence than it looks. All rest "
        f"on {in_words(len(study['seeds']))} seeds and {len(f.labels)} test images; a single run picked on the "
        "test set, as in the reports, cannot separate effects of this size from noise."
    )
