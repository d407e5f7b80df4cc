"""The TL+KD study at smoke scale on generated CIFAR-10 files: every arm, regime and sweep level, paired
arms, resumption, the sweeps' inputs, the tables' arithmetic, the MNIST foreground analysis, and the
clear errors of the full profile on a machine without CIFAR-10 or the pretrained weights."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from kdcourse import data, stats
from kdcourse.backbones import MissingWeightsError
from kdcourse.studies import mnist_distillation, tlkd
from kdcourse.studies.tlkd import figures, foreground, report, runner

SMOKE = {"size": 32, "limit": 120, "val_size": 40, "mixed_precision": False}


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    return data.write_generated_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=40)


@pytest.fixture(scope="module")
def generated(cifar_folder) -> data.ImageData:
    return tlkd.load_data(tlkd.config_for("smoke", **SMOKE), cifar_folder, download=False)


@pytest.fixture(scope="module")
def outcomes(generated, tmp_path_factory) -> tuple[tlkd.TlkdOutcome, tlkd.TlkdOutcome]:
    root = tmp_path_factory.mktemp("runs")
    config = tlkd.config_for("smoke", **SMOKE)
    return tlkd.run_study(config, generated, run_root=root), tlkd.run_study(config, generated, run_root=root)


def test_generated_cifar_is_in_the_release_format_and_resized(generated, cifar_folder):
    assert generated.train.x.shape[1:] == (3, 32, 32) and generated.train.x.dtype == torch.uint8
    assert len(generated.train) == 120 and len(generated.val) == 40 and len(generated.test) == 40
    assert set(generated.train.y.tolist()) == set(range(10))
    # CIFAR-10 is loaded at its own 32 px whatever the study's size; the study resizes it once for the students
    loaded = tlkd.load_data(tlkd.config_for("smoke", **{**SMOKE, "size": 64}), cifar_folder, download=False)
    assert torch.equal(loaded.train.x, generated.train.x)
    resized = tlkd.at_size(loaded, 64)
    assert resized.test.x.shape[-1] == 64 and torch.equal(resized.train.y, generated.train.y)
    assert tlkd.at_size(loaded, 32) is loaded


def test_every_regime_arm_and_seed_is_run(outcomes):
    first, _ = outcomes
    assert set(zip(first.runs.regime, first.runs.arm)) == {(r, a) for r in tlkd.REGIMES for a in tlkd.ARMS}
    assert (first.runs.groupby(["regime", "arm"]).seed.nunique() == 2).all()
    assert first.runs[["accuracy", "precision", "recall", "f1"]].stack().between(0, 1).all()
    assert set(first.chosen) == set(tlkd.REGIMES)
    # the fine-tuning regime's curve counts the head phase first, then the fine-tuning epochs
    config = first.config
    finetune = first.history[first.history.regime == "finetune"].groupby(["arm", "seed"]).epoch.max()
    assert (finetune == config.head_epochs + config.finetune_epochs).all()
    assert first.history[first.history.regime == "thesis"].epoch.max() <= config.max_epochs
    for regime in tlkd.REGIMES:
        matrix = np.array(first.confusion[regime]["tl"][0])
        assert matrix.shape == (10, 10) and matrix.sum() == 40


def test_sweeps_cover_every_level_arm_and_seed(outcomes):
    first, _ = outcomes
    expected = {(s, lv) for s, levels in first.config.sweeps for lv in levels}
    assert set(zip(first.sweeps.sweep, first.sweeps.level)) == expected
    chosen = (first.chosen["thesis"]["temperature"], first.chosen["thesis"]["alpha"])
    arms = 2 if chosen == first.config.thesis_kd else 3  # the chosen (T, α) runs only where it is not the thesis's
    assert (first.sweeps.groupby(["sweep", "level"]).size() == arms * 2).all()  # two seeds
    table = tlkd.sweep_table(first.sweeps)
    assert len(table) == (arms - 1) * len(expected) and table.verdict.isin(["clears the noise", "suggestive", "within noise"]).all()


def test_a_rerun_resumes_every_network_exactly(outcomes):
    first, second = outcomes
    pd.testing.assert_frame_equal(first.runs.drop(columns="train_seconds"), second.runs.drop(columns="train_seconds"))
    pd.testing.assert_frame_equal(first.sweeps, second.sweeps)


def test_kd_with_alpha_zero_is_the_labels_only_arm(generated, tmp_path):
    # every arm of a seed starts from the same head and sees the same batches: α = 0 reproduces TL exactly
    config = tlkd.config_for("smoke", **SMOKE, seeds=(3,), temperatures=(4.0,), alphas=(0.0,), sweeps=(), regimes=("thesis",))
    outcome = tlkd.run_study(config, generated, run_root=tmp_path)
    runs = outcome.runs.set_index("arm")
    assert runs.loc["tlkd_chosen", "accuracy"] == runs.loc["tl", "accuracy"]
    assert outcome.confusion["thesis"]["tlkd_chosen"] == outcome.confusion["thesis"]["tl"]


def test_occlusion_sweeps_replace_exactly_the_occluded_images(generated, tmp_path):
    config = tlkd.config_for("smoke", **SMOKE, seeds=(0,))
    study = runner._Study(config, generated, tmp_path, torch.device("cpu"))
    teacher, logits, scores = study.teacher(0)
    occluded = runner._sweep_training(study, teacher, logits, "center_black", 0.25, 0, 7)
    changed = (occluded.pooled != study.views["student"].pooled_train).flatten(2).any(-1).any(0)
    assert occluded.targets is None and occluded.subset is None and np.isnan(occluded.teacher_accuracy)
    assert int(changed.sum()) == round(0.25 * len(generated.train))
    # the teacher sees the same occluded images
    assert torch.equal((occluded.soft != logits).flatten(2).any(-1).any(0), changed)
    # the occluded views are computed once: a second call reads them back
    study.occluded = lambda *_: pytest.fail("occluded views computed again")
    again = runner._sweep_training(study, teacher, logits, "center_black", 0.25, 0, 7)
    assert torch.equal(again.pooled, occluded.pooled) and torch.equal(again.soft, occluded.soft)
    # a retrained sweep's teacher learns from the same noisy labels or fewer images as its students
    noisy = runner._sweep_training(study, teacher, logits, "label_noise", 0.2, 0, 1)
    assert int((noisy.targets != generated.train.y).sum()) == round(0.2 * len(generated.train))
    assert noisy.soft.shape == logits.shape and not torch.equal(noisy.soft, logits) and noisy.teacher_seconds > 0
    assert (tmp_path / "seed0_teacher_label_noise0.2.ckpt").exists() and 0 <= noisy.teacher_accuracy <= 1
    fewer = runner._sweep_training(study, teacher, logits, "fraction", 0.5, 0, 2)
    subset = fewer.subset
    assert len(subset) == 60 and torch.bincount(generated.train.y[subset], minlength=10).tolist() == [6] * 10
    outside = torch.ones(len(generated.train), dtype=torch.bool)
    outside[subset] = False
    assert torch.equal(fewer.soft[:, outside], logits[:, outside]) and not torch.equal(fewer.soft[:, subset], logits[:, subset])
    assert scores["train_seconds"] > 0 and 0 <= scores["val_accuracy"] <= 1


def test_epochs_to_reach_and_the_speed_table():
    rows = []
    for seed, (tl_curve, kd_curve) in enumerate([([0.5, 0.7, 0.8], [0.7, 0.8, 0.9]), ([0.6, 0.6, 0.8], [0.6, 0.8, 0.8]),
                                                 ([0.5, 0.6, 0.7], [0.5, 0.8, 0.8])]):
        for arm, curve in (("tl", tl_curve), ("tlkd_thesis", kd_curve), ("tlkd_chosen", kd_curve)):
            rows += [{"regime": "thesis", "arm": arm, "seed": seed, "epoch": e, "val_accuracy": v} for e, v in enumerate(curve, 1)]
    history = pd.DataFrame(rows)
    reach = tlkd.epochs_to_reach(history, 0.8).set_index(["arm", "seed"])
    assert reach.loc[("tl", 0), "epoch"] == 3 and reach.loc[("tlkd_thesis", 0), "epoch"] == 2
    assert np.isnan(reach.loc[("tl", 2), "epoch"]) and reach.loc[("tl", 2), "epochs"] == 3
    table = tlkd.speed_table(history, (0.8,)).set_index("arm")
    row = table.loc["tlkd_thesis"]
    assert row["seeds reached (TL)"] == 2 and row["seeds reached (TL+KD)"] == 3
    assert row["mean"] == pytest.approx(-1.0) and row["unit"] == "epochs"  # paired over the two seeds both reached


def test_true_positive_change_is_the_difference_of_the_diagonals():
    confusion = {"thesis": {"tl": {0: [[5, 1], [2, 2]], 1: [[4, 2], [1, 3]]},
                            "tlkd_thesis": {0: [[6, 0], [2, 2]], 1: [[6, 0], [0, 4]]}}}
    table = tlkd.true_positive_change(confusion, "thesis", "tlkd_thesis", ("a", "b"))
    assert table["change mean"].tolist() == [1.5, 0.5] and table["test images"].tolist() == [6, 4]


def test_mnist_foreground_shares_for_every_model_and_seed(mnist_root, tmp_path):
    dataset = data.load_mnist(mnist_root, val_size=50, download=False)
    config = mnist_distillation.config_for("smoke", seeds=(0, 1), train_samples=200, val_size=50, temperatures=(4,),
                                           alphas=(0.5,), headline=(4.0, 0.5))
    models = {seed: mnist_distillation.seed_models(config, dataset, seed, run_root=tmp_path) for seed in config.seeds}
    outcome = tlkd.mnist_foreground(models, dataset, images=6, background=10, samples=20)
    shares = outcome.shares
    assert set(shares.model) == {"teacher", "kd", "scratch"} and len(shares) == 2 * 3 * 6
    assert shares.share.between(0, 1).all() and shares.stroke.between(0, 1).all()
    # the stroke share is a property of the image, the same for every model and seed
    assert (shares.groupby("image").stroke.nunique() == 1).all()
    effects = tlkd.foreground_effects(shares)
    assert list(zip(effects.model, effects.baseline)) == list(tlkd.FOREGROUND_COMPARISONS)
    assert effects["images verdict"].notna().all()


def test_full_profile_stops_clearly_without_cifar10_or_weights(tmp_path, monkeypatch):
    with pytest.raises(data.MissingDataError, match="CIFAR-10"):
        tlkd.load_data(tlkd.config_for("full"), tmp_path, download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="vit_base_patch16_224"):
        tlkd.load_backbones(tlkd.config_for("thesis"))


@pytest.mark.parametrize("bad", [{"pair": "other"}, {"size": 16}, {"alphas": (1.5,)}, {"thesis_kd": (0.0, 0.1)},
                                 {"seeds": (0, 0)}, {"regimes": ("frozen",)}, {"sweeps": (("blur", (0.1,)),)},
                                 {"regimes": ("finetune",)}, {"data": "cifar"}, {"max_epochs": 0}, {"teacher_epochs": 0},
                                 {"grid_regimes": ("frozen",)}, {"retrained_sweeps": ("center_black",)},
                                 {"retrained_sweeps": ("noise",)},
                                 {"pair": "cifar10_tiny", "retrained_sweeps": ("fraction",)}])
def test_impossible_settings_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        tlkd.run_study(tlkd.config_for("smoke", **bad), None, run_root=tmp_path)


def test_the_teacher_from_scratch_and_the_regime_without_a_grid(outcomes):
    first, _ = outcomes
    config = first.config
    assert tlkd.PAIRS[config.pair].teacher_recipe == "airbench" and config.grid_regimes == ("thesis",)
    assert (first.teachers.train_seconds > 0).all() and first.teachers.val_accuracy.between(0, 1).all()
    assert first.teachers.one_view_accuracy.between(0, 1).all()  # the teacher without its test-time mirror views
    assert set(first.teacher_models) == set(config.seeds) and first.teacher_models[0].tta == 1
    # the fine-tuning regime searches no grid: it trains TL+KD at the thesis regime's choice
    assert set(first.grid.regime) == {"thesis"} and first.chosen["finetune"] == first.chosen["thesis"]
    # retrained sweeps name their own teacher's accuracy; the occlusion sweeps keep the seed's teacher
    teachers = first.teachers.set_index("seed").accuracy
    occlusion = first.sweeps[first.sweeps.sweep.isin(["center_black", "quarter_black"])]
    assert (occlusion.teacher_accuracy == occlusion.seed.map(teachers)).all()
    assert first.stage_seconds["sweep teachers"] > 0 and first.sweeps.teacher_accuracy.between(0, 1).all()
    # every stage's computing time is kept, and a run resumed from its checkpoints reports the same
    _, second = outcomes
    assert set(first.stage_seconds) == set(runner.STAGES) and all(v > 0 for v in first.stage_seconds.values())
    assert second.stage_seconds == pytest.approx(first.stage_seconds)


def test_a_fine_tuned_pretrained_teacher_and_a_grid_in_both_regimes(generated, tmp_path):
    config = tlkd.config_for("smoke", **SMOKE, pair="cifar10_tiny", seeds=(0,), retrained_sweeps=(),
                             grid_regimes=tlkd.REGIMES, sweeps=(("quarter_black", (0.5,)),))
    outcome = tlkd.run_study(config, generated, run_root=tmp_path)
    assert set(outcome.grid.regime) == set(tlkd.REGIMES) and outcome.stage_seconds["sweep teachers"] == 0
    assert outcome.teachers.loc[0, "val_accuracy"] >= 0 and outcome.teachers.loc[0, "train_seconds"] > 0
    assert outcome.config.size == 32 and outcome.sweeps.teacher_accuracy.eq(outcome.teachers.loc[0, "accuracy"]).all()


def test_foreground_shares_of_the_students_and_the_teacher_score_the_same_images(outcomes, generated):
    first, _ = outcomes
    from kdcourse.explain import grabcut_foreground

    images = generated.test.x[:6]
    masks = np.stack([grabcut_foreground(image) for image in images])
    config = dataclasses.replace(first.config, size=48)  # students see the images at 48 px, the teacher at 32
    shares = tlkd.student_foreground(dataclasses.replace(first, config=config), generated, images, masks, samples=4,
                                     teacher=True)
    assert set(shares.model) == {"tl", "tlkd_thesis", "teacher"}
    by_model = shares.groupby("model").image.apply(lambda s: sorted(set(s)))
    assert by_model["teacher"] == by_model["tl"] == by_model["tlkd_thesis"]
    assert shares.share.between(0, 1).all()


def test_outcome_record_is_json_and_keeps_every_table(outcomes):
    first, _ = outcomes
    record = json.loads(json.dumps(tlkd.outcome_record(first)))
    assert record["classes"] == list(data.CIFAR10_CLASSES)
    runs = pd.DataFrame(record["runs"])
    assert len(runs) == len(first.runs) and set(first.runs.columns) <= set(runs.columns)
    assert set(record["confusion"]["thesis"]["tl"]) == {"0", "7"}
    assert record["config"]["sweeps"][0][0] == "fraction"


def test_pass_counts_follow_the_configuration():
    config = tlkd.config_for("thesis")
    counts = tlkd.pass_counts(config, train=100, val=10, test=20, shap_images=5, shap_samples=4).set_index(["stage", "network"])
    assert counts.loc[("cached views", "teacher"), "images"] == 2 * 100 + 10 + 20  # two views: an image and its mirror image
    grid = len(config.temperatures) * len(config.alphas)
    assert counts.loc[("fine-tuning regime (students)", "student"), "images"] == 3 * (1 + grid) * config.finetune_epochs * 100
    occluded = 0.25 + 0.5 + 0.95 + 0.25 + 0.5 + 1.0
    assert counts.loc[("occluded views of the sweeps", "teacher"), "images"] == round(3 * occluded * 2 * 100)
    rates = {"teacher forward": 10.0, "teacher forward+backward": 5.0, "student forward": 20.0, "student forward+backward": 10.0}
    seconds = tlkd.estimated_seconds(counts.reset_index(), rates).set_index(["stage", "network"]).seconds
    assert seconds[("cached views", "teacher")] == pytest.approx(230 / 10.0)
    with pytest.raises(ValueError, match="no measured rate"):
        tlkd.estimated_seconds(counts.reset_index(), {"teacher forward": 1.0})


def test_throughput_counts_images_per_second():
    from kdcourse.costs import throughput

    slow = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 512), torch.nn.Linear(512, 10))
    forward = throughput(slow, (3, 8, 8), batch_size=4, repeats=3)
    both = throughput(slow, (3, 8, 8), batch_size=4, repeats=3, backward=True)
    assert forward > 0 and both > 0
    assert all(p.grad is None for p in slow.parameters())  # gradients are dropped after each step
    with pytest.raises(ValueError):
        throughput(slow, (3, 8, 8), batch_size=0)


def test_image_foreground_scores_every_model_seed_and_image(outcomes, generated):
    first, _ = outcomes
    from kdcourse.explain import grabcut_foreground

    images = generated.test.x[:3]
    masks = np.stack([grabcut_foreground(image) for image in images])
    assert masks[:, 8:24, 8:24].mean() > masks.mean()  # the generated object is the centred square
    net = tlkd.load_backbones(first.config)["student"]
    shares = tlkd.image_foreground({arm: first.models["thesis"][arm] for arm in ("tl", "tlkd_thesis")}, images, masks,
                                   generated.train.x[:5], net.mean, net.std, samples=8)
    area = masks.reshape(3, -1).mean(1)
    scored = np.flatnonzero((area > 0) & (area < 1))  # an empty or full mask says nothing and is left out
    assert len(shares) == 2 * 2 * len(scored) and shares.share.between(0, 1).all()
    assert sorted(shares.image.unique()) == scored.tolist()
    assert np.allclose(shares.groupby("image").stroke.first().to_numpy(), area[scored])
    with pytest.raises(ValueError, match="every mask"):
        tlkd.image_foreground({"tl": first.models["thesis"]["tl"]}, images, np.zeros_like(masks), generated.train.x[:5],
                              net.mean, net.std, samples=8)


# ---------------------------------------------------------------- what the chapter shows, from the recorded run

RECORDED = Path(__file__).resolve().parents[1] / "book" / "results" / "full" / "tl_kd.json"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())["results"]


def test_the_recorded_mhist_run_gives_every_table_figure_and_sentence(recorded):
    from matplotlib.figure import Figure

    found = recorded["mhist"]
    runs, history, sweeps = (pd.DataFrame(found[key]) for key in ("runs", "history", "sweeps"))
    overview = report.overview(found).splitlines()
    assert len(overview) == 1 + len(found["chosen"]) and f"{found['data_counts']['test']} test images" in overview[0]
    assert overview[0].startswith("MHIST: ") and report.teacher_text(found) == ""  # a pretrained teacher
    repeated = [regime for regime in found["chosen"] if report.repeats_thesis(found, regime)]
    assert len(report.true_positive_tables(found)) == 2 * len(found["confusion"]) - len(repeated)
    runs, history = (report.without_repeated_arm(frame, found) for frame in (runs, history))
    speed, _ = report.speed_shown(history, tuple(found["config"]["thresholds"]))
    h4, _ = report.sweep_shown(sweeps)
    lessons = report.lessons_text(found, speed, h4)
    assert lessons.count("* MHIST, ") == runs.regime.nunique() + 1 and f"of the {len(h4)} sweep comparisons" in lessons
    for figure in (figures.confusion_figure(found), figures.learning_curves(history), figures.sweep_figure(sweeps),
                   figures.shap_figure(found)):
        assert isinstance(figure, Figure) and figure.axes
        plt.close(figure)
    assert report.summary_text(found, None).startswith("CIFAR-10 not run; MHIST: thesis tl ")
    assert report.summary_text(None, None).startswith("CIFAR-10 not run; MHIST not run")


def test_the_recorded_cifar_run_is_complete_and_gives_every_table_figure_and_sentence(recorded):
    """The recorded CIFAR-10 study: the JPEG copy read whole, three seeds, every sweep level, SHAP on the
    photographs whose masks found an object, the stage times and rates, and every table, figure and sentence of its section."""
    from matplotlib.figure import Figure

    found = recorded["cifar10"]
    config, seeds = found["config"], set(found["config"]["seeds"])
    assert found["source"] == "CIFAR-10 (JPEG copy)" and seeds == {0, 7, 42}
    assert found["data_counts"]["test"] == 10000 and found["data_counts"]["train"] + found["data_counts"]["val"] == 50000
    runs, history, sweeps = (pd.DataFrame(found[key]) for key in ("runs", "history", "sweeps"))
    assert runs.groupby(["regime", "arm"]).seed.apply(set).eq(seeds).all()
    levels = {(sweep, level) for sweep, values in config["sweeps"] for level in values}
    assert set(zip(sweeps.sweep, sweeps.level)) == levels and sweeps.groupby(["sweep", "level"]).seed.nunique().eq(3).all()
    shares = pd.DataFrame(found["foreground"]["shares"])
    explained = found["foreground"]["images"]  # at least 200 photographs, 20 of each class, every one scored
    assert len(set(explained)) == len(explained) >= 200 and set(shares.image) == set(explained)
    assert np.bincount(found["foreground"]["labels"], minlength=10).tolist() == [len(explained) // 10] * 10
    assert f"found an object in {len(explained)} of the {found['foreground']['tried']}" in found["foreground"]["masks"]
    assert set(shares.model) == {"tl", "tlkd_thesis", "teacher"}
    assert shares.groupby("model").seed.apply(set).eq(seeds).all()
    assert report.overview(found).startswith("CIFAR-10 (JPEG copy): 45000 training")
    assert "reports 94.0 % after 9.9 epochs" in report.teacher_text(found)
    assert report.gap_text(found).startswith("On CIFAR-10 the teacher leads the TL student by ")
    runs, history = (report.without_repeated_arm(frame, found) for frame in (runs, history))
    assert len(report.score_tables(runs, "CIFAR-10")) == 2 and report.true_positive_tables(found)
    assert "93.46" in report.thesis_comparison_text(found)
    effects, _ = report.share_effects(shares, report.PHOTO_COMPARISONS)
    assert len(effects) == len(report.PHOTO_COMPARISONS)
    speed, _ = report.speed_shown(history, tuple(config["thresholds"]))
    h4, _ = report.sweep_shown(sweeps)
    assert report.label_noise_text(h4, retrained=True)
    stages = report.stage_table(found)
    assert len(stages.frame) == len(runner.STAGES) + 2 and found["device"] in stages.caption
    training = sum(found["stage_seconds"][stage] for stage in report.TRAINING_STAGES) / 60
    assert "of them training networks" in stages.caption and f", {training:.0f} of them" in stages.caption
    assert set(report.TRAINING_STAGES) < set(runner.STAGES)
    assert len(report.rates_table(found).frame) == 4 and len(report.sizes_table(found).frame) == 3
    assert report.lessons_text(found, speed, h4).count("* CIFAR-10") == runs.regime.nunique() + 2
    for figure in (figures.confusion_figure(found), figures.learning_curves(history), figures.sweep_figure(sweeps)):
        assert isinstance(figure, Figure) and figure.axes
        plt.close(figure)


def test_a_chosen_setting_equal_to_the_thesis_is_not_shown_as_a_second_arm(recorded):
    found = copy.deepcopy(recorded["mhist"])
    for regime in found["chosen"]:  # as if validation had chosen the thesis's setting in every regime
        found["chosen"][regime] = dict(zip(("temperature", "alpha"), found["config"]["thesis_kd"]))
    runs = report.without_repeated_arm(pd.DataFrame(found["runs"]), found)
    assert "tlkd_chosen" not in set(runs.arm) and len(report.true_positive_tables(found)) == len(found["confusion"])
    scores, effects = report.score_tables(runs, "MHIST")
    assert "(T, α) chosen on validation" not in repr(scores.frame) + repr(effects.frame)
    assert report.lessons_text(found, pd.DataFrame(), pd.DataFrame(found["sweeps"]).pipe(tlkd.sweep_table)).count(
        "no second, independent KD arm") == len(found["chosen"])


def test_two_class_effects_include_the_auc(recorded):
    found = recorded["mhist"]
    h1 = tlkd.effects_table(report.without_repeated_arm(pd.DataFrame(found["runs"]), found)).set_index(
        ["regime", "arm", "metric"])
    auc = h1.loc[("finetune", "tlkd_thesis", "auc")]
    runs = pd.DataFrame(found["runs"]).set_index(["regime", "arm", "seed"]).sort_index().auc
    expected = 100 * (runs.loc["finetune", "tlkd_thesis"] - runs.loc["finetune", "tl"]).mean()
    paired = stats.paired_effect(runs.loc["finetune", "tlkd_thesis"], runs.loc["finetune", "tl"])
    assert auc["mean"] == pytest.approx(expected) and auc["verdict"] == paired.verdict
    assert "AUC" in set(report.score_tables(pd.DataFrame(found["runs"]), "MHIST")[1].frame.metric)
    assert "auc" not in tlkd.effects_table(pd.DataFrame(found["runs"]).assign(auc=np.nan)).metric.unique()


def test_the_verdict_count_covers_every_table_and_states_the_joint_rule(recorded):
    from kdcourse import stats

    counts = report.verdict_counts(recorded["mhist"], recorded["mnist_foreground"])
    total = sum(len(v) for v in counts.values())
    text = report.verdicts_text(recorded["mhist"], recorded["mnist_foreground"])
    assert f"draws {total} verdicts" in text and stats.JOINT_RULE in text
    assert report.verdicts_text(None, None) == ""
    h4 = tlkd.sweep_table(pd.DataFrame(recorded["mhist"]["sweeps"]))
    leak = report.label_noise_text(h4)
    cleared = h4[(h4.sweep == "label_noise") & (h4.verdict == "clears the noise")]
    assert all(f"{level:g}" in leak for level in cleared.level)


def test_the_foreground_verdict_is_the_joint_one(recorded):
    effects = tlkd.foreground_effects(pd.DataFrame(recorded["mnist_foreground"]["shares"]))
    weaker = ["clears the noise", "suggestive", "within noise"]
    for _, row in effects.iterrows():
        assert weaker.index(row["verdict"]) >= max(weaker.index(row["seeds verdict"]), weaker.index(row["images verdict"]))


def test_the_recorded_mnist_shares_and_costs_give_their_sentences(recorded):
    shares = pd.DataFrame(recorded["mnist_foreground"]["shares"])
    effects, _ = report.share_effects(shares)
    text = report.mnist_lessons_text(shares, effects)
    assert f"{100 * shares[shares.model == 'teacher'].share.mean():.1f} %" in text
    rates, stages = report.cost_tables(recorded["cost"])
    assert len(rates.frame) == len(recorded["cost"]["rates"]) and "hours" in stages.frame.columns
    assert "hours of computation" in report.cost_text(recorded["cost"])
    assert len(stages.frame) == len(tlkd.pass_counts(tlkd.config_for("thesis"), train=45_000, val=5_000, test=10_000))


def test_a_cifar_record_gives_every_table_figure_and_sentence(outcomes, generated):
    """The CIFAR-10 section renders a record of the smoke study (airbench teacher, foreground shares with the
    teacher, stage times, sizes) with the same functions as the recorded run will."""
    from matplotlib.figure import Figure

    first, _ = outcomes
    photo = tlkd.photo_foreground(first, generated, 6, 4)
    assert len(photo.images) == len(photo.objects.masks) == 6 and photo.labels.tolist() == list(range(6))
    assert set(photo.shares.model) == {"tl", "tlkd_thesis", "teacher"} and photo.seconds > 0
    assert set(photo.shares.image) == set(photo.objects.indices.tolist())  # test indices, every image scored
    assert torch.equal(generated.test.y[photo.objects.indices], photo.labels)
    again = tlkd.photo_foreground(first, generated, 6, 4)  # read back from the run's folder, with its first cost
    pd.testing.assert_frame_equal(again.shares, photo.shares)
    assert again.seconds == photo.seconds and again.found == photo.found
    assert np.array_equal(again.objects.masks, photo.objects.masks) and torch.equal(again.images, photo.images)
    assert len(list((first.folder / "foreground").glob("photos6_samples4.pt"))) == 1
    found_masks = photo.found
    sizes = tlkd.student_sizes(first.config, generated, sizes=(32,), images=60)
    rates = tlkd.study_rates(first.config)
    assert set(rates) == {f"{r} {p}" for r in ("teacher", "student") for p in ("forward", "forward+backward")}
    found = json.loads(json.dumps(report.cifar_record(first, photo, sizes, rates)))
    assert len(report.rates_table(found).frame) == 4
    assert report.dataset_name(found) == "CIFAR-10" and found["foreground"]["masks"] == found_masks
    overview = report.overview(found)
    assert found["source"] == generated.source == "generated stand-in for CIFAR-10"
    assert overview.startswith(f"{generated.source}: 120 training") and "AirbenchNet trained from scratch" in overview
    teacher = report.teacher_text(found)  # beside the paper's number, with what differs from its run
    assert "reports 94.0 % after 9.9 epochs" in teacher and f"reads {generated.source}, not the release" in teacher
    assert "trains on 120 images where the paper trains on all 50,000" in teacher
    assert "AUC" not in overview.splitlines()[0]
    gaps = report.teacher_gaps(found)
    assert list(gaps.regime) == ["thesis", "finetune"] and gaps["n"].eq(2).all()
    assert report.gap_text(found).startswith("On CIFAR-10 the teacher leads the TL student by ")
    runs, history = (report.without_repeated_arm(pd.DataFrame(found[key]), found) for key in ("runs", "history"))
    scores, _ = report.score_tables(runs, "CIFAR-10")
    assert scores.caption.startswith("CIFAR-10 test scores")
    assert "93.46" in report.thesis_comparison_text(found)
    photo = pd.DataFrame(found["foreground"]["shares"])
    effects, table = report.share_effects(photo, report.PHOTO_COMPARISONS)
    assert len(effects) == 3 and "object" in repr(report.share_table(photo, "CIFAR-10", foreground="object").frame.columns)
    assert report.photo_lessons_text(photo, effects, found_masks).startswith("* CIFAR-10, hypothesis 2: GrabCut, run on")
    h4, sweep_shown = report.sweep_shown(pd.DataFrame(found["sweeps"]))
    assert "teacher accuracy (%)" in sweep_shown.frame.columns
    assert "same noisy labels" in report.label_noise_text(h4.assign(verdict="clears the noise"), retrained=True)
    stages = report.stage_table(found)
    assert len(stages.frame) == len(runner.STAGES) + 2 and found["device"] in stages.caption
    speed, _ = report.speed_shown(history, tuple(found["config"]["thresholds"]))
    assert report.lessons_text(found, speed, h4).count("* CIFAR-10") == 2 + 2
    counts = report.verdict_counts(None, None, found)
    assert "hypothesis 2, CIFAR-10 foreground shares" in counts and len(counts) == 4
    assert report.summary_text(None, found).startswith("CIFAR-10: thesis tl ")
    assert "hypothesis 2, CIFAR-10" in report.verdicts_text(None, None, found)
    assert len(report.sizes_table(found).frame) == 1
    for figure in (figures.confusion_figure(found), figures.learning_curves(history),
                   figures.sweep_figure(pd.DataFrame(found["sweeps"]))):
        assert isinstance(figure, Figure) and figure.axes
        plt.close(figure)


def test_found_object_leaves_out_empty_and_full_masks():
    masks = np.zeros((5, 4, 4), dtype=bool)
    masks[1, :2] = masks[3, 0, 0] = masks[4, 1:] = True
    masks[2] = True  # full: no background
    assert foreground.found_object(masks).tolist() == [False, True, False, True, True]


def test_object_images_take_the_same_number_per_class_and_pass_over_empty_masks():
    rng = np.random.default_rng(0)
    images = rng.normal(60, 10, (8, 32, 32, 3)).clip(0, 255).astype(np.uint8)  # noise: GrabCut finds nothing
    with_object = [1, 2, 3, 5, 6]
    images[with_object, 10:22, 10:22] = (220, 40, 40)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.arange(8) % 2  # class 0: images 0, 2, 4, 6 (objects in 2 and 6); class 1: 1, 3, 5, 7
    objects = tlkd.object_images(images, labels, count=4, classes=2, side=64)
    assert labels[objects.indices].tolist() == [0, 1, 0, 1]  # class by class in turn
    assert set(objects.indices[::2]) == {2, 6} and set(objects.indices[1::2]) <= {1, 3, 5}
    assert objects.masks.shape == (4, 32, 32) and objects.masks[:, 10:22, 10:22].mean() > 0.9
    assert 4 <= objects.tried <= 8 and objects.native_found <= objects.tried
    assert "found an object in 4 of the" in foreground.found_sentence(objects, 2, 32)
    with pytest.raises(ValueError, match="only 2 of the 4 test images of class 0"):
        tlkd.object_images(images, labels, count=6, classes=2, side=64)


def test_config_table_names_the_pair_and_what_each_regime_trains():
    config = tlkd.config_for("full")
    text = repr(report.config_table(config, "full").frame.to_dict())
    assert tlkd.PAIRS[config.pair].teacher in text and tlkd.PAIRS[config.pair].student in text
    assert "then every layer" in text and "then the last stage" not in text
    departures = report.departures_text(config)
    for value in (config.max_epochs, config.early_stopping_patience, config.plateau_patience,
                  *report.THESIS_SCHEDULE.values()):
        assert re.search(rf"\b{value:g}\b", departures)


def test_cifar_for_writes_a_generated_set_in_the_smoke_profile():
    cifar, source = tlkd.cifar_for(tlkd.config_for("smoke", **SMOKE), generated=True)
    assert source == "generated" and cifar.train.x.shape[1:] == (3, 32, 32)


def test_the_mhist_ensemble_teacher_averages_its_members(tmp_path):
    """The MHIST pair's teacher is the MHIST chapter's ensemble: each member trained in two phases, their
    logits averaged, and the averaged network used for the occluded sweeps (random weights, generated MHIST)."""
    folder = data.write_generated_mhist(tmp_path / "mhist", per_partition=16)
    config = tlkd.config_for("mhist", seeds=(0,), size=32, limit=12, pretrained=False, mixed_precision=False,
                             batch_size=8, head_epochs=1, finetune_epochs=1, max_epochs=1, temperatures=(4.0,),
                             alphas=(0.5,), regimes=("thesis",), sweeps=(("quarter_black", (0.5,)),))
    dataset = tlkd.load_data(config, folder)
    study = runner._Study(config, dataset, tmp_path / "runs" / "x", torch.device("cpu"))
    assert list(study.teacher_roles) == ["member0", "member1", "member2"]
    network, train_logits, scores = study.teacher(0)
    members = [study.teacher_runner.two_phase(role, 0, role, keep_train_logits=True) for role in study.teacher_roles]
    assert torch.allclose(train_logits, torch.stack([m.train_logits for m in members]).mean(0))
    assert 0 <= scores["auc"] <= 1 and len(network.members) == 3
    outcome = tlkd.run_study(config, dataset, run_root=tmp_path / "runs")
    assert set(outcome.sweeps.sweep) == {"quarter_black"} and len(outcome.teachers) == 1


def test_a_record_of_another_teacher_is_said_to_be_one():
    config = tlkd.config_for("mhist")
    members = {f"member{i}": f"m{i}.pth" for i in range(3)}
    assert report.teacher_note({"weights": {**members, "student": "s.pth"}}, config) == ""
    note = report.teacher_note({"weights": {"teacher": "t.pth", "student": "s.pth"}}, config)
    assert note.startswith("Note: this record was made with a teacher of 1 network") and "t.pth" in note
    assert report.recorded_teacher({"weights": {**members, "student": "s.pth"}}) == ["m0.pth", "m1.pth", "m2.pth"]


def test_student_sizes_weigh_the_probe_against_the_cost(generated):
    config = tlkd.config_for("smoke", **SMOKE)
    sizes = tlkd.student_sizes(config, generated, sizes=(32, 48), images=60)
    assert sizes["size"].tolist() == [32, 48] and sizes.probe_val_accuracy.between(0, 1).all()
    assert (sizes["forward"] > sizes["forward+backward"]).all() and (sizes.seconds > 0).all()


def test_a_fraction_too_small_for_the_teachers_batch_is_refused_before_training(generated, tmp_path):
    config = tlkd.config_for("smoke", **SMOKE, teacher_batch_size=64)  # half of 120 images is under one batch
    with pytest.raises(ValueError, match="fewer than one of the teacher's batches"):
        tlkd.run_study(config, generated, run_root=tmp_path)
    assert not any(tmp_path.rglob("*.ckpt"))


def test_a_full_record_keeps_the_parts_that_did_not_run():
    mhist = {"runs": [{"regime": "thesis", "arm": "tl", "seed": 0, "accuracy": 0.8}]}
    previous = {"provenance": {"commit": "abc1234", "date": "2026-12-01T10:00:00"},
                "results": {"mhist": mhist, "mnist_foreground": {"shares": []}, "cifar10": "not run"}}
    record = report.full_record(None, None, None, {"rates": {}}, previous)
    assert record["mhist"] == mhist and record["cifar10"] == "not run"
    assert record["summary"].startswith("CIFAR-10 not run; MHIST: thesis tl 0.8000")
    assert record["carried"] == {"mhist": {"commit": "abc1234", "date": "2026-12-01T10:00:00"},
                                 "mnist_foreground": {"commit": "abc1234", "date": "2026-12-01T10:00:00"}}
    assert "commit abc1234, 2026-12-01" in report.carried_note(record, "mhist") and report.carried_note(record, "cifar10") == ""
    # carried again by a later run, it keeps the commit of the run that made it
    later = report.full_record(None, {"shares": [2]}, None, None, {"provenance": {"commit": "def5678", "date": "2026-12-02"},
                                                                   "results": record})
    assert later["carried"] == {"mhist": {"commit": "abc1234", "date": "2026-12-01T10:00:00"}}
    assert report.full_record(None, None, None, None)["mhist"] == "not run"


def test_fields_added_at_their_defaults_keep_a_configuration_key():
    import hashlib

    config = tlkd.config_for("mhist")
    before = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in ("grid_regimes", "teacher_epochs", "teacher_batch_size", "retrained_sweeps")}
    assert config.key() == hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10]
    assert dataclasses.replace(config, grid_regimes=("thesis",)).key() != config.key()
