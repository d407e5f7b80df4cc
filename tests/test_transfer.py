"""Cached trunk views: the same views as the on-the-fly augmentation, and the same training; the
views cached per network, and the two phases trained on them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from kdcourse.backbones import Backbone, backbone, set_trainable, split_at
from kdcourse.data import ImageData, ImageTransform, TensorBatches, augment_batch, load_mhist, write_generated_mhist
from kdcourse.kd.hinton import HintonKD
from kdcourse.train import fit
from kdcourse.transfer import (
    VIEWS, TwoPhaseRunner, TwoPhaseSettings, ViewBatches, cache, dihedral_view, role_views, trunk_views,
)


def test_views_are_the_eight_symmetries_that_augment_batch_draws():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    views = [dihedral_view(x, code) for code in range(VIEWS)]
    assert len({v.flatten().tolist().__str__() for v in views}) == VIEWS  # all distinct
    generator = torch.Generator().manual_seed(5)
    codes = torch.randint(0, VIEWS, (2,), generator=torch.Generator().manual_seed(5))
    augmented = augment_batch(x, generator)
    for i, code in enumerate(codes.tolist()):
        assert torch.equal(augmented[i], views[code][i])
    with pytest.raises(ValueError, match="0–7"):
        dihedral_view(x, 8)


def test_view_batches_draw_like_tensor_batches_with_augmentation():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10)
    cache = torch.stack([dihedral_view(images, code) for code in range(VIEWS)])  # the "trunk" is the identity
    soft = torch.randn(VIEWS, 10, 2)
    on_the_fly = TensorBatches(images, labels, batch_size=4, seed=3, transform=lambda b, g: augment_batch(b, g))
    cached = ViewBatches(cache, labels, soft, batch_size=4, seed=3)
    for epoch in (0, 1):
        on_the_fly.set_epoch(epoch)
        cached.set_epoch(epoch)
        pairs = list(zip(on_the_fly, cached, strict=True))
        for (x, y), (features, y_cached, extra) in pairs:
            assert torch.equal(x, features) and torch.equal(y, y_cached)
            # the extra of each sample is the one of the view that sample came in
            for row in range(len(y)):
                view = next(v for v in range(VIEWS) if torch.equal(cache[v, y[row]], features[row]))
                assert torch.equal(extra[row], soft[view, y[row]])


def test_view_batches_check_their_inputs():
    assert len(list(ViewBatches(torch.zeros(1, 5, 2), torch.zeros(5), batch_size=2, shuffle=False))) == 3
    with pytest.raises(ValueError, match="features must be"):
        ViewBatches(torch.zeros(8, 4, 2), torch.zeros(5))
    with pytest.raises(ValueError, match="extra tensor"):
        ViewBatches(torch.zeros(8, 5, 2), torch.zeros(5), torch.zeros(3))


def test_training_the_top_on_cached_views_equals_training_with_a_frozen_trunk():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 2, (24,))
    mean, std = (0.5,) * 3, (0.25,) * 3

    def network():
        torch.manual_seed(1)
        net = backbone("mobilenetv1_025.tflite_in1k", 2, weights=None, frozen_batchnorm=True).model
        return net, *split_at(net, 16)

    whole, trunk, _ = network()
    set_trainable(trunk, False)
    fit(whole, TensorBatches(images, labels, batch_size=8, seed=4, transform=ImageTransform(mean, std)),
        epochs=2, lr=1e-3, seed=4, progress=False)

    cached_net, trunk, top = network()
    cache = trunk_views(trunk, images, mean, std, batch_size=8)
    assert cache.shape == (VIEWS, 24, 128, 2, 2)
    fit(top, ViewBatches(cache, labels, batch_size=8, seed=4), epochs=2, lr=1e-3, seed=4, progress=False)

    for (name, a), b in zip(whole.state_dict().items(), cached_net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(whole.state_dict()["classifier.weight"], network()[0].state_dict()["classifier.weight"])


def test_view_batches_draw_among_any_number_of_cached_views():
    # two views (an image and its mirror image, as for CIFAR-10): every sample comes in one of them, both occur
    features = torch.stack([torch.zeros(64, 1), torch.ones(64, 1)])
    extra = features.clone() * 10
    seen = set()
    for x, _, soft in ViewBatches(features, torch.arange(64), extra, batch_size=16, seed=3):
        assert torch.equal(soft, x * 10)  # the extra of the same view
        seen |= set(x.flatten().tolist())
    assert seen == {0.0, 1.0}


def test_trunk_views_takes_view_codes():
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    out = trunk_views(nn.Identity(), images, (0.0,) * 3, (1 / 255,) * 3, views=(0, 4))
    assert torch.allclose(out[1], dihedral_view(images, 4).float())
    with pytest.raises(ValueError, match="distinct codes"):
        trunk_views(nn.Identity(), images, (0.0,) * 3, (1.0,) * 3, views=(0, 0))


@pytest.fixture(scope="module")
def small_mhist(tmp_path_factory) -> ImageData:
    folder = tmp_path_factory.mktemp("generated")
    write_generated_mhist(folder, per_partition=12)
    return load_mhist(folder, size=32, limit=8)


@pytest.fixture(scope="module")
def nets() -> dict[str, Backbone]:
    torch.manual_seed(0)
    return {role: backbone("mobilenetv1_025.tflite_in1k", 2, weights=None) for role in ("teacher", "student")}


def test_role_views_are_computed_once_for_the_same_weights_and_images(small_mhist, nets, tmp_path, monkeypatch):
    net, n = nets["teacher"], len(small_mhist.train)
    views = role_views("teacher", net, small_mhist, 16, tmp_path, torch.device("cpu"), views=(0, 4))
    assert views.train.shape[:2] == (2, n) and views.val.shape[0] == len(small_mhist.val)
    assert views.pooled_train.shape == (2, n, 256) and views.pooled_test.shape == (len(small_mhist.test), 256)
    monkeypatch.setattr(cache, "compute_views", lambda *args: pytest.fail("recomputed"))
    again = role_views("teacher", net, small_mhist, 16, tmp_path, torch.device("cpu"), views=(0, 4))
    assert torch.equal(again.train, views.train) and torch.equal(again.pooled_val, views.pooled_val)
    other = replace(small_mhist, test=small_mhist.test.head(3))  # other images: another file
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        role_views("teacher", net, other, 16, tmp_path, torch.device("cpu"), views=(0, 4))


def test_settings_are_read_from_a_study_configuration():
    @dataclass
    class Study:
        batch_size: int = 8
        head_epochs: int = 2
        head_lr: float = 0.01
        finetune_epochs: int = 3
        finetune_lr: float = 0.001
        split_reduction: int = 8
        pretrained: bool = False
        seeds: tuple[int, ...] = (0,)

    settings = TwoPhaseSettings.from_config(Study(), {"student": "resnet10t"}, val_metric="accuracy")
    assert settings == TwoPhaseSettings({"student": "resnet10t"}, 8, False, 8, 2, 0.01, 3, 0.001, "accuracy")


def test_two_phase_trains_head_then_top_distils_and_resumes(small_mhist, nets, tmp_path):
    device = torch.device("cpu")
    views = {role: role_views(role, net, small_mhist, 16, tmp_path / "cache", device, views=(0, 4))
             for role, net in nets.items()}
    names = {role: net.name for role, net in nets.items()}
    settings = TwoPhaseSettings(names, pretrained=False, batch_size=4, head_epochs=2, finetune_epochs=1)
    runner = TwoPhaseRunner(settings, small_mhist, views, tmp_path / "runs", device)
    teacher = runner.two_phase("teacher", 0, "teacher", keep_train_logits=True)
    n, n_test = len(small_mhist.train), len(small_mhist.test)
    assert teacher.train_logits.shape == (2, n, 2) and teacher.test_logits.shape == (n_test, 2)
    assert len(teacher.head_fit.history) == 2 and len(teacher.fit.history) == 1
    student = runner.two_phase("student", 0, "kd", HintonKD(4.0, 0.5), soft=teacher.train_logits)
    again = runner.two_phase("student", 0, "kd", HintonKD(4.0, 0.5), soft=teacher.train_logits)
    assert torch.equal(student.test_logits, again.test_logits)  # read from its checkpoints
    plain = runner.two_phase("student", 0, "labels")
    assert not torch.equal(student.test_logits, plain.test_logits)
    fit_result, logits = runner.scratch("student", 0)
    assert logits.shape == (n_test, 2) and len(fit_result.history) == 2 + 1  # the budget of both phases
    assert teacher.val_logits.shape == (len(small_mhist.val), 2)
    head_fit, head_logits = runner.head_only("student", 0, "probe")
    assert len(head_fit.history) == 2 and head_logits.shape == (n_test, 2)


def test_linear_probe_chooses_its_strength_on_training_features_only():
    from kdcourse.transfer import linear_probe

    generator = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 5, generator=generator) + y[:, None] * torch.tensor([2.0, 0, 0, 0, 0])
    (scores,), c = linear_probe(x, y, x[:10])
    assert scores.shape == (10,) and c > 0
    assert (scores[y[:10] == 1].mean() > scores[y[:10] == 0].mean())
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, torch.zeros(200, dtype=torch.long), x)
    # more classes: one score per class, chosen by accuracy
    y3 = torch.arange(300) % 3
    x3 = torch.randn(300, 4, generator=generator) + torch.nn.functional.one_hot(y3, 4).float() * 3
    (scores3,), _ = linear_probe(x3, y3, x3[:30])
    assert scores3.shape == (30, 3) and (scores3.argmax(1) == y3[:30].numpy()).mean() > 0.8
