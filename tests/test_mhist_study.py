"""The MHIST study at smoke scale on a generated set in MHIST's layout: every arm, resumption, the
seeds' pair with random weights, the clear error when its pretrained weights are missing, and the
chapter's tables, sentences and saved record of a live run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from kdcourse import data
from kdcourse.backbones import MissingWeightsError
from kdcourse.paths import DATA_ENV
from kdcourse.studies import mhist
from kdcourse.studies import mhist_findings as report

SMOKE = {"seeds": (0, 1), "size": 32, "limit": 12, "batch_size": 8, "head_epochs": 1, "finetune_epochs": 1,
         "pretrained": False, "data": "generated", "mixed_precision": False}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> data.ImageData:
    folder = tmp_path_factory.mktemp("generated")
    data.write_generated_mhist(folder, per_partition=24)
    return data.load_mhist(folder, size=SMOKE["size"], limit=SMOKE["limit"])


@pytest.fixture(scope="module")
def outcome(generated, tmp_path_factory) -> tuple[mhist.MhistOutcome, mhist.MhistOutcome]:
    root = tmp_path_factory.mktemp("runs")
    config = mhist.config_for("smoke", **SMOKE)
    first = mhist.run_study(config, generated, run_root=root)
    return first, mhist.run_study(config, generated, run_root=root)  # the second resumes every checkpoint


def test_generated_set_has_mhist_layout_and_both_classes(generated):
    for split in (generated.train, generated.val, generated.test):
        assert split.x.dtype == torch.uint8 and set(split.y.tolist()) == {0, 1}
        assert ((split.extras["votes"] >= 4).long() == split.y).all()


def test_every_arm_is_trained_for_every_seed(outcome):
    first, _ = outcome
    arms = set(mhist.ARM_LABELS)
    assert set(first.runs.arm) == arms
    assert (first.runs.groupby("arm").seed.nunique() == 2).all()
    assert first.runs.test_auc.between(0, 1).all()
    pretrained_two_phase = first.runs[first.runs.arm.isin(["teacher", "student", "kd", "takd", "known_skd"])]
    assert pretrained_two_phase.test_auc_head.notna().all()
    assert first.runs[first.runs.arm.str.endswith("scratch")].test_auc_head.isna().all()
    assert set(first.scores) >= {"teacher", "kd", "takd"} and len(first.scores["kd"][0]) == len(first.labels)
    assert first.chosen == {"temperature": 4.0, "alpha": 0.5}


def test_a_rerun_resumes_every_network_exactly(outcome):
    first, second = outcome
    pd.testing.assert_frame_equal(first.runs.drop(columns="train_seconds"), second.runs.drop(columns="train_seconds"))
    assert first.scores == second.scores


def test_effect_table_judges_every_comparison(outcome):
    first, _ = outcome
    table = mhist.effect_table(first.runs, first.scores, first.labels)
    assert list(zip(table.arm, table.baseline)) == list(mhist.COMPARISONS)
    assert table["images verdict"].isin(["clears the noise", "suggestive", "within noise"]).all()
    effect = mhist.phase_effect(first.runs, "teacher")
    assert effect.n == 2


def test_vote_subclasses():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    votes = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    assert mhist.vote_subclasses(labels, votes).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="disagrees"):
        mhist.vote_subclasses(torch.tensor([1]), torch.tensor([2]))


def test_seeds_pair_trains_with_random_weights(generated, tmp_path):
    config = mhist.config_for("smoke", **{**SMOKE, "seeds": (0,)}, pair="seeds", temperatures=(2.0,), alphas=(0.5,))
    result = mhist.run_study(config, generated, run_root=tmp_path)
    assert set(result.runs.model) == set(mhist.PAIRS["seeds"])


def test_seeds_pair_full_profile_stops_on_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="resnetv2_50"):
        mhist.run_study(mhist.config_for("full", pair="seeds"), None, run_root=tmp_path)  # before any data is read


@pytest.mark.parametrize("bad", [{"pair": "other"}, {"size": 16}, {"alphas": (1.5,)}, {"temperatures": (0.0,)},
                                 {"seeds": (0, 0)}, {"data": "cifar"}])
def test_impossible_settings_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        mhist.run_study(mhist.config_for("smoke", **bad), None, run_root=tmp_path)


def test_findings_of_a_live_run_render_every_table_and_sentence(outcome):
    first, _ = outcome
    found = report.read_findings("full", first)  # the full profile reads the live run
    assert list(found.summary.index) == list(dict.fromkeys(first.runs.arm))
    assert set(found.seed_effect) == set(mhist.COMPARISONS)
    assert found.auc("kd").count("±") == 1
    table = report.effects_table(found.comparison)
    assert len(table.frame) == len(mhist.COMPARISONS)
    assert table.frame.comparison.iloc[2] == "student, KD − student, pretrained, labels only"
    assert "student, KD" in report.summary_table(found.summary, "every arm").frame.arm.tolist()
    for text in (report.imagenet_text(found), report.distillation_text(found)):
        assert "points" in text and "nan" not in text
    study = {"seeds": [0, 1], "pair": "offline", "size": 32}
    assert "2 seeds and" in report.conclusion_text(found, study)
    assert report.reported_table(found.summary).frame.shape == (len(report.REPORTED), 4)


def test_the_saved_record_is_json_and_holds_every_arm(outcome):
    first, _ = outcome
    costs = pd.DataFrame([{"role": "student", "network": "n", "parameters": 10, "MACs": 1.5, "latency": 2.0}])
    record = report.result_record(first, "generated", costs)
    assert json.loads(json.dumps(record))["scores"].keys() == first.scores.keys()
    assert record["config"]["seeds"] == [0, 1] and record["data"] == "generated"
    assert record["summary"].startswith("teacher, pretrained ") and record["summary"].endswith("seeds [0, 1])")


def test_a_smoke_run_stands_in_generated_images_only_when_mhist_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    config, dataset, source = report.study_inputs("smoke", mhist.config_for("smoke", pretrained=False))
    assert source == "generated" and config.data == "generated" and len(dataset.test) > 0
    assert report.inputs_text(config, dataset, source).startswith("SMOKE RUN ON GENERATED IMAGES")
    with pytest.raises(data.MissingDataError):
        report.study_inputs("full", mhist.config_for("full"))
