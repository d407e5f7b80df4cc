"""The MHIST study at smoke scale on a generated set in MHIST's layout: the resolution chosen on
validation, the head diagnosis, every arm, resumption, the seeds' team with random weights, the clear
error when its pretrained weights are missing, and the chapter's tables, figures, sentences and saved
record, from a live run and read back from that record as a smoke build reads it."""

from __future__ import annotations

import dataclasses
import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from kdcourse import data
from kdcourse.backbones import MissingWeightsError
from kdcourse.course import results
from kdcourse.paths import DATA_ENV
from kdcourse.stats import VERDICTS
from kdcourse.studies import mhist, mhist_figures, mhist_lessons, mhist_record
from kdcourse.studies import mhist_findings as report

SMOKE = {"seeds": (0, 1), "sizes": (32, 48), "size": 32, "limit": 12, "batch_size": 8, "head_epochs": 1,
         "finetune_epochs": 1, "pretrained": False, "data": "generated", "mixed_precision": False}
STUDY = {**{k: list(v) if isinstance(v, tuple) else v for k, v in SMOKE.items()}, "team": "offline",
         "split_reduction": 16, "head_lr": 1e-3, "finetune_lr": 1e-4, "temperatures": [4.0], "alphas": [0.5]}
OFFLINE = mhist.TEAMS["offline"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    data.write_generated_mhist(folder, per_partition=24)
    return folder


@pytest.fixture(scope="module")
def generated(folder) -> data.ImageData:
    return data.load_mhist(folder, size=SMOKE["size"], limit=SMOKE["limit"])


@pytest.fixture(scope="module")
def outcome(generated, tmp_path_factory) -> tuple[mhist.MhistOutcome, mhist.MhistOutcome]:
    root = tmp_path_factory.mktemp("runs")
    config = mhist.config_for("smoke", **SMOKE)
    first = mhist.run_study(config, generated, run_root=root)
    return first, mhist.run_study(config, generated, run_root=root)  # the second resumes every checkpoint


@pytest.fixture(scope="module")
def sizes_and_heads(folder, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of compare_sizes and, at the chosen size, of head_diagnosis."""
    root = tmp_path_factory.mktemp("sizes")
    config = mhist.config_for("smoke", **SMOKE)

    def load(size: int) -> data.ImageData:
        return data.load_mhist(folder, size=size, limit=SMOKE["limit"])

    sizes = mhist.compare_sizes(config, load, run_root=root)
    config = dataclasses.replace(config, size=mhist.chosen_size(sizes))
    return sizes, mhist.head_diagnosis(config, load(config.size), run_root=root)


@pytest.fixture(scope="module")
def costs() -> pd.DataFrame:
    """Costs in the layout of report.network_costs for every network of the offline team (made up)."""
    return pd.DataFrame([{"network": mhist.SHORT_NAMES[name], "role": "", "name": name, "parameters": 1000 * (i + 1),
                          "MACs": 2.0 * (i + 1), "latency": 1.0} for i, name in enumerate(OFFLINE.networks())])


def test_generated_set_has_mhist_layout_and_both_classes(generated):
    for split in (generated.train, generated.val, generated.test):
        assert split.x.dtype == torch.uint8 and set(split.y.tolist()) == {0, 1}
        assert ((split.extras["votes"] >= 4).long() == split.y).all()


def test_every_arm_is_trained_for_every_seed(outcome):
    first, _ = outcome
    members = {mhist.MEMBER + name for name in OFFLINE.members}
    assert set(first.runs.arm) == set(mhist.ARM_LABELS) | members
    assert (first.runs.groupby("arm").seed.nunique() == 2).all()
    assert first.runs.test_auc.between(0, 1).all()
    pretrained_two_phase = first.runs[first.runs.arm.isin(["teacher", "student", "kd", "kd_ensemble", "takd"])]
    assert pretrained_two_phase.test_auc_head.notna().all()
    assert first.runs[first.runs.arm.str.endswith("scratch")].test_auc_head.isna().all()
    assert set(first.scores) >= {"teacher", "ensemble", "kd", "kd_ensemble", "takd"}
    assert len(first.scores["kd"][0]) == len(first.labels)
    assert first.chosen == {teacher: {"temperature": 4.0, "alpha": 0.5} for teacher in ("teacher", "ensemble")}
    assert set(first.grid.teacher) == {"teacher", "ensemble"}
    assert first.teacher_network in OFFLINE.members
    single = first.runs[first.runs.arm == "teacher"].set_index("seed").test_auc
    member = first.runs[first.runs.arm == mhist.MEMBER + first.teacher_network].set_index("seed").test_auc
    pd.testing.assert_series_equal(single, member)


def test_a_rerun_resumes_every_network_exactly(outcome):
    first, second = outcome
    pd.testing.assert_frame_equal(first.runs.drop(columns="train_seconds"), second.runs.drop(columns="train_seconds"))
    assert first.scores == second.scores


def test_effect_table_judges_every_comparison_with_a_joint_verdict(outcome):
    first, _ = outcome
    table = mhist.effect_table(first.runs, first.scores, first.labels)
    assert list(zip(table.arm, table.baseline)) == list(mhist.COMPARISONS)
    assert mhist.COMPARISONS[:3] == (("teacher", "student"), ("ensemble", "student"), ("ensemble", "teacher"))
    for column in ("images verdict", "seeds verdict", "verdict"):
        assert table[column].isin(VERDICTS).all()
    assert mhist.phase_effect(first.runs, "teacher").n == 2


def test_sizes_are_compared_on_validation_and_the_head_diagnosed(sizes_and_heads):
    sizes, heads = sizes_and_heads
    assert len(sizes) == len(SMOKE["sizes"]) * len(OFFLINE.networks()) * len(SMOKE["seeds"])
    assert mhist.chosen_size(sizes) == sizes.groupby("size").val_auc.mean().idxmax()
    assert heads.groupby("start").size().to_dict() == {"probe": 4, "timm": 8, "fan-in": 8}
    trained = heads[heads.start != "probe"]
    assert (trained.curve.map(len) == SMOKE["head_epochs"]).all() and (trained.logit_std > 0).all()
    assert heads[heads.start == "probe"].logit_std.isna().all()


def test_vote_subclasses():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    votes = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    assert mhist.vote_subclasses(labels, votes).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="disagrees"):
        mhist.vote_subclasses(torch.tensor([1]), torch.tensor([2]))
    text = mhist_lessons.votes_text()
    assert "at least 4 of the 7" in text and "clear SSA (6–7 votes for SSA)" in text


def test_seeds_team_trains_with_random_weights(generated, tmp_path):
    config = mhist.config_for("smoke", **{**SMOKE, "seeds": (0,)}, team="seeds", temperatures=(2.0,), alphas=(0.5,))
    result = mhist.run_study(config, generated, run_root=tmp_path)
    team = mhist.TEAMS["seeds"]
    assert set(result.runs.model) == {*team.networks(), "+".join(team.members)}


def test_seeds_team_full_profile_stops_on_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="resnetv2_50"):
        mhist.run_study(mhist.config_for("full", team="seeds"), None, run_root=tmp_path)  # before any data is read


@pytest.mark.parametrize("bad", [{"team": "other"}, {"size": 16}, {"sizes": (16, 64)}, {"alphas": (1.5,)},
                                 {"temperatures": (0.0,)}, {"seeds": (0, 0)}, {"data": "cifar"}])
def test_impossible_settings_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        mhist.run_study(mhist.config_for("smoke", **bad), None, run_root=tmp_path)


def _render_everything(found: report.MhistFindings, sizes: pd.DataFrame, heads: pd.DataFrame,
                       costs: pd.DataFrame) -> list[str]:
    """Every table, figure and sentence of the chapter's findings; returns the sentences."""
    for section in ("gaps", "imagenet", "distillation", "subclasses"):
        assert len(report.effects_table(found, section).frame) > 0
    report.summary_table(found.summary, "every arm"), report.sizes_table(sizes), report.diagnosis_table(heads)
    for figure in (mhist_figures.diagnosis_figure(heads), mhist_figures.curves_figure(found, 1),
                   mhist_figures.grid_figure(found)):
        plt.close(figure)
    return [mhist_lessons.sizes_text(sizes), mhist_lessons.diagnosis_text(heads, STUDY), mhist_lessons.rule_text(found),
            mhist_lessons.gaps_text(found), mhist_lessons.imagenet_text(found, STUDY, costs),
            mhist_lessons.distillation_text(found), mhist_lessons.best_student_text(found),
            mhist_lessons.subclass_text(found), mhist_lessons.reports_text(STUDY),
            mhist_lessons.poster_goal_text(found, STUDY, costs),
            mhist_lessons.conclusion_text(found, STUDY, sizes, heads, costs)]


def test_findings_of_a_live_run_render_every_table_and_sentence(outcome, sizes_and_heads, costs):
    first, _ = outcome
    sizes, heads = sizes_and_heads
    found = report.read_findings("full", first)  # the full profile reads the live run
    assert list(found.summary.index) == list(dict.fromkeys(first.runs.arm))
    best = found.best_distilled()
    assert best == max(mhist.DISTILLED_ARMS, key=lambda arm: found.summary.loc[arm, "val_auc mean"])
    claims = list(zip(found.comparison.arm, found.comparison.baseline))
    assert claims[:len(mhist.COMPARISONS)] == list(mhist.COMPARISONS)
    assert ("teacher_known", "teacher") in claims and (best, "student") in claims
    assert found.auc("kd").count("±") == 1 and found.verdict("kd", "student").endswith("**")
    assert set(mhist.DISTILLED_ARMS) <= set(report.OWN_TEACHER)
    texts = _render_everything(found, sizes, heads, costs)
    assert all("nan" not in text and "tensor" not in text for text in texts)
    assert mhist.arm_label(report.OWN_TEACHER[best]) in mhist_lessons.best_student_text(found)
    assert f"draws {mhist_lessons.verdict_count(found)} verdicts" in texts[-1]
    assert mhist_lessons.verdict_count(found) == len(found.comparison) + 2
    assert "2 seeds and" not in texts[-1] and "two seeds and" in texts[-1]
    assert mhist_lessons.reported_table(found).frame.shape == (len(mhist_lessons.REPORTED), 5)
    assert "teacher_scratch" not in set(mhist_lessons.REPORTED.arm) and set(mhist_lessons.REPORTED.arm) <= set(
        found.summary.index)
    budget = report.budget_table(STUDY).frame
    assert budget.iloc[-1].tolist()[1:] == ["0", "0", str(SMOKE["head_epochs"] + SMOKE["finetune_epochs"])]


def test_a_smoke_build_renders_the_saved_record(outcome, sizes_and_heads, costs, tmp_path, monkeypatch):
    first, _ = outcome
    sizes, heads = sizes_and_heads
    record = mhist_record.result_record(first, "generated", costs, sizes, heads)
    saved = json.loads(json.dumps(record, allow_nan=False))
    assert saved["scores"].keys() == first.scores.keys() and saved["config"]["seeds"] == [0, 1]
    assert saved["teacher_network"] == first.teacher_network and saved["chosen"] == first.chosen
    assert saved["summary"].startswith("ensemble member ") and saved["summary"].endswith("seeds [0, 1])")
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    results.save_results(report.NAME, record, profile="full", seeds=[0, 1], wall_seconds=1.0)
    config = mhist.config_for("smoke", **SMOKE)
    assert report.study_config("smoke", config)["sizes"] == [32, 48]
    found = report.read_findings("smoke", first)  # a smoke build reads the record, never the live run
    recorded_sizes, recorded_heads = report.read_sizes("smoke", sizes), report.read_diagnosis("smoke", heads)
    assert found.teacher_network == first.teacher_network and found.chosen == first.chosen
    assert recorded_heads.curve.map(len).tolist() == heads.curve.map(len).tolist()
    pd.testing.assert_frame_equal(found.summary, mhist.arm_summary(first.runs), atol=1e-3, check_dtype=False)
    texts = _render_everything(found, recorded_sizes, recorded_heads, report.read_costs("smoke", costs))
    assert all("nan" not in text for text in texts) and found.teacher_name() in texts[3]


def test_a_smoke_run_stands_in_generated_images_only_when_mhist_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    config, load, source = report.study_inputs("smoke", mhist.config_for("smoke", pretrained=False))
    dataset = load(config.size)
    assert source == "generated" and config.data == "generated" and len(dataset.test) > 0
    assert load(max(config.sizes)).train.x.shape[-1] == max(config.sizes)
    assert report.inputs_text(config, dataset, source).startswith("SMOKE RUN ON GENERATED IMAGES")
    with pytest.raises(data.MissingDataError):
        report.study_inputs("full", mhist.config_for("full"))
