"""The airbench network and recipe: shapes, the whitening layer, label smoothing, the optimiser and
schedule it adds to fit, its augmentations, and a short run that learns and resumes exactly."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdcourse import optim
from kdcourse.cifar_teacher import AirbenchRecipe, plain_batches, train_cifar_teacher
from kdcourse.course import bench
from kdcourse.data import ImageData, ShiftTransform, TensorBatches, load_cifar10, random_shift, write_generated_cifar10
from kdcourse.kd.method import CrossEntropy
from kdcourse.models import AirbenchNet, ConvGroup, count_parameters
from kdcourse.train import evaluate, fit

SMALL = AirbenchRecipe(batch_size=32, widths=(16, 32, 32), whitening_images=256)  # seconds on a CPU
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> ImageData:
    """The generated CIFAR-10 stand-in: 256 training and 64 validation images of coloured squares, 10 classes."""
    folder = write_generated_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=64)
    return load_cifar10(folder, val_size=64, download=False)


def correlated_images(n: int, seed: int) -> torch.Tensor:
    """uint8 images ``(n, 3, 32, 32)`` whose neighbouring pixels and channels are correlated, as in photographs."""
    generator = torch.Generator().manual_seed(seed)
    grey = 4 * F.avg_pool2d(torch.randn(n, 1, 35, 35, generator=generator), 4, stride=1)  # unit variance
    colour = grey + 0.3 * torch.randn(n, 3, 32, 32, generator=generator)
    return (128 + 40 * colour).clamp(0, 255).to(torch.uint8)


def test_the_network_maps_images_to_logits_in_every_mode() -> None:
    torch.manual_seed(0)
    net = AirbenchNet()
    assert count_parameters(net) == 1_972_792
    assert ConvGroup(24, 64)(torch.randn(2, 24, 31, 31)).shape == (2, 64, 15, 15)
    x = torch.randn(3, 3, 32, 32)
    assert net(x).shape == (3, 10)
    net.eval()
    for tta in (0, 1, 2):
        net.tta = tta
        assert net(x).shape == (3, 10)
    net.tta = 1
    assert torch.allclose(net(x), (net.logits(x) + net.logits(x.flip(-1))) / 2)
    assert AirbenchNet(4, (8, 16, 16))(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_the_whitening_layer_whitens_patches_and_stays_frozen() -> None:
    net = AirbenchNet()
    net.init_whitening(correlated_images(400, seed=0), MEAN, STD)
    weight = net.whiten.weight.detach().clone()
    assert not net.whiten.weight.requires_grad
    assert torch.equal(weight[12:], -weight[:12])
    fresh = (correlated_images(400, seed=1).float() / 255 - 0.5) / 0.25  # other images of the same kind
    outputs = F.conv2d(fresh, weight[:12]).transpose(0, 1).reshape(12, -1)  # before bias and GELU
    moments = outputs @ outputs.T / outputs.shape[1]
    assert torch.allclose(moments, torch.eye(12), atol=0.1)
    raw = F.unfold(fresh, 2).transpose(1, 2).reshape(-1, 12)  # the patches themselves are far from white
    raw_moments = raw.T @ raw / len(raw)
    correlations = raw_moments / raw_moments.diag().sqrt().outer(raw_moments.diag().sqrt())
    assert (correlations - torch.eye(12)).abs().max() > 0.5

    step = torch.optim.SGD(net.parameters(), lr=1.0)
    F.cross_entropy(net(fresh[:8]), torch.arange(8)).backward()
    step.step()
    assert torch.equal(net.whiten.weight, weight)


def test_the_whitening_bias_trains_only_in_the_first_epochs() -> None:
    net = AirbenchNet(whiten_bias_epochs=3)
    net.set_epoch(2)
    assert net.whiten.bias.requires_grad
    net.set_epoch(3)
    assert not net.whiten.bias.requires_grad


def test_label_smoothing_matches_a_hand_computation() -> None:
    logits, target, eps = [2.0, 0.0, -1.0], 0, 0.2
    log_p = [z - math.log(sum(math.exp(v) for v in logits)) for z in logits]
    smoothed = [(1 - eps) * (k == target) + eps / 3 for k in range(3)]
    expected = -sum(q * lp for q, lp in zip(smoothed, log_p))
    loss = CrossEntropy(label_smoothing=eps)(torch.tensor([logits]), torch.tensor([target]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.50318, abs=1e-5)  # nats; 0.16985 without smoothing
    assert repr(CrossEntropy()) == "CrossEntropy()"  # the plain loss keeps its description, so its runs keep their names


def test_the_triangle_schedule_and_the_norm_learning_rate() -> None:
    assert [optim.triangle_factor(step, 100) for step in (0, 23, 100)] == pytest.approx([0.2, 1.0, 0.07])
    net = AirbenchNet(widths=(8, 8, 8))
    sgd = optim.make_optimizer("sgd", net, CrossEntropy(), lr=0.5, weight_decay=1e-3, momentum=0.85, nesterov=True,
                               norm_lr_scale=64.0, device=torch.device("cpu"))
    main_group, norms = sgd.param_groups
    assert norms["lr"] == 32.0 and norms["weight_decay"] == pytest.approx(1e-3 / 64) and main_group["nesterov"]
    assert {id(p) for p in norms["params"]} == {
        id(p) for group in net.groups for norm in (group.norm1, group.norm2) for p in norm.parameters()}


def test_alternating_flips_mirror_each_image_in_every_other_epoch() -> None:
    x = torch.arange(16 * 3 * 4 * 4).reshape(16, 3, 4, 4)
    batches = TensorBatches(x, torch.arange(16), batch_size=16, shuffle=False, seed=3, alternating_flip=True)
    first = next(iter(batches))[0]
    batches.set_epoch(1)
    second = next(iter(batches))[0]
    mirrored = (first != x).flatten(1).any(1)
    assert 0 < mirrored.sum() < 16  # the first epoch mirrors a random part
    assert torch.equal(second, torch.where(mirrored.view(-1, 1, 1, 1), x, x.flip(-1)))
    plain = TensorBatches(x, torch.arange(16), batch_size=16, shuffle=False, seed=3)
    assert batches.fingerprint() != plain.fingerprint() and "alternating" not in plain.fingerprint()


def test_reflected_shifts_are_crops_of_the_mirrored_border() -> None:
    x = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    shifted = random_shift(x, torch.Generator().manual_seed(0), max_shift=2, mode="reflect")
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    crops = [padded[..., i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
    assert all(any(torch.equal(shifted[k], crop[k]) for crop in crops) for k in range(8))
    assert not torch.equal(shifted, x)
    normalised = ShiftTransform(MEAN, STD, max_shift=0)(x, torch.Generator())
    assert torch.allclose(normalised, (x.float() / 255 - 0.5) / 0.25)


def test_a_short_run_learns_and_an_interrupted_one_resumes_to_the_same_weights(
        cifar: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference, reference_result = train_cifar_teacher(cifar, seed=1, epochs=2, recipe=SMALL, amp_dtype=None, progress=False)
    assert len(reference_result.history) == 2 and reference_result.best_val_score > 0.3  # chance: 0.1
    assert evaluate(reference, plain_batches(cifar.test.x, cifar), cifar.test.y)["accuracy"] > 0.3
    checkpoint = tmp_path / "teacher.ckpt"
    forward, calls = CrossEntropy.forward, {"n": 0}

    def interrupted(self: CrossEntropy, *args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # in the middle of the second epoch (8 batches per epoch)
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(CrossEntropy, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_cifar_teacher(cifar, seed=1, epochs=2, recipe=SMALL, amp_dtype=None, checkpoint=checkpoint, progress=False)
    monkeypatch.setattr(CrossEntropy, "forward", forward)
    resumed, resumed_result = train_cifar_teacher(cifar, seed=1, epochs=2, recipe=SMALL, amp_dtype=None, checkpoint=checkpoint,
                                                  progress=False)
    assert [h["val_accuracy"] for h in resumed_result.history] == [h["val_accuracy"] for h in reference_result.history]
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_the_benchmark_reports_an_epoch(cifar: ImageData) -> None:
    row = bench.cifar_teacher_epoch(cifar, 40, recipe=SMALL)
    assert row["train_images"] == 32 and row["val_images"] == 40
    assert row["train_images_per_second"] > 0 and row["epoch_seconds_45k"] > 0


@pytest.mark.parametrize("make, message", [
    (lambda: AirbenchNet(tta=3), "tta must be"),
    (lambda: AirbenchNet(widths=(64, 256)), "three positive widths"),
    (lambda: CrossEntropy(label_smoothing=1.0), "label_smoothing"),
    (lambda: AirbenchRecipe(batch_size=0), "batch_size"),
    (lambda: AirbenchRecipe(momentum=1.0), "momentum"),
    (lambda: AirbenchNet().init_whitening(torch.rand(4, 3, 32, 32), MEAN, STD), "uint8 images"),
    (lambda: random_shift(torch.zeros(1, 3, 8, 8), torch.Generator(), mode="wrap"), "mode"),
    (lambda: TensorBatches(torch.zeros(4, 3), alternating_flip=True), "alternating_flip"),
    (lambda: fit(AirbenchNet(), [], epochs=1, optimizer="adamw", nesterov=True), "Nesterov"),
    (lambda: fit(AirbenchNet(), [], epochs=1, norm_lr_scale=0.0), "norm_lr_scale"),
])
def test_bad_settings_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_training_split_smaller_than_a_batch_is_refused(cifar: ImageData) -> None:
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_cifar_teacher(cifar, seed=0, epochs=1, progress=False)
