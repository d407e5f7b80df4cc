"""Tests of kdcourse.kd.hinton: the Hinton et al. distillation loss and its conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdcourse.kd.hinton import distillation_loss, kd_loss, soft_cross_entropy


def log_softmax_np(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def kd_reference(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """T² · mean over the batch of Σ_c p_t (log p_t − log p_s), in float64 numpy."""
    log_ps = log_softmax_np(student.double().numpy() / temperature)
    log_pt = log_softmax_np(teacher.double().numpy() / temperature)
    return float(temperature**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean())


def random_logits(seed: int = 0, n: int = 8, c: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, c, generator=generator) * 3
    teacher = torch.randn(n, c, generator=generator) * 3
    targets = torch.randint(0, c, (n,), generator=generator)
    return student, teacher, targets


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_kd_loss_matches_independent_numpy_computation(temperature: float) -> None:
    student, teacher, _ = random_logits()
    value = kd_loss(student, teacher, temperature)
    assert value.dim() == 0
    assert value.item() == pytest.approx(kd_reference(student, teacher, temperature), rel=1e-5, abs=1e-7)


def test_kd_loss_regression_value() -> None:
    # Stored once from this implementation (and equal to the numpy reference to 1e-6).
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 10) * 3, torch.randn(4, 10) * 3
    assert kd_loss(student, teacher, 4.0).item() == pytest.approx(7.470776, abs=1e-5)
    targets = torch.tensor([0, 3, 7, 9])
    assert distillation_loss(student, teacher, targets, 4.0, 0.5).item() == pytest.approx(5.303882, abs=1e-5)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    student, teacher, _ = random_logits()
    assert kd_loss(teacher.clone(), teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # softmax is shift invariant: adding a constant per row changes nothing
    assert kd_loss(teacher + 5.0, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-5)
    assert kd_loss(student, teacher, 4.0).item() > 1e-3


def test_no_gradient_reaches_the_teacher_but_the_student_gets_one() -> None:
    student, teacher, targets = random_logits()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    (kd_loss(student, teacher, 4.0) + distillation_loss(student, teacher, targets, 2.0, 0.7)).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_distillation_loss_mixes_kd_and_cross_entropy_with_alpha() -> None:
    student, teacher, targets = random_logits()
    kd = kd_loss(student, teacher, 3.0)
    ce = F.cross_entropy(student, targets)
    for alpha in (0.0, 0.25, 0.5, 1.0):
        mixed = distillation_loss(student, teacher, targets, 3.0, alpha)
        assert mixed.item() == pytest.approx((alpha * kd + (1 - alpha) * ce).item(), rel=1e-6)
    assert torch.equal(distillation_loss(student, teacher, targets, 3.0, 0.0), ce)
    assert distillation_loss(student, teacher, targets, 3.0, 1.0).item() == pytest.approx(kd.item(), rel=1e-7)


def test_alpha_one_ignores_the_labels_and_alpha_zero_ignores_the_teacher() -> None:
    student, teacher, targets = random_logits()
    other_targets = (targets + 1) % 10
    other_teacher = teacher.flip(1)
    assert distillation_loss(student, teacher, targets, 2.0, 1.0) == distillation_loss(student, teacher, other_targets, 2.0, 1.0)
    assert distillation_loss(student, teacher, targets, 2.0, 0.0) == distillation_loss(student, other_teacher, targets, 2.0, 0.0)


def test_soft_cross_entropy_differs_from_kd_by_the_teacher_entropy_with_equal_gradients() -> None:
    student, teacher, _ = random_logits()
    temperature = 4.0
    p_teacher = F.softmax(teacher.double() / temperature, dim=1)
    teacher_entropy = -(p_teacher * p_teacher.log()).sum(1).mean().item()

    s1 = student.clone().requires_grad_(True)
    s2 = student.clone().requires_grad_(True)
    soft = soft_cross_entropy(s1, teacher, temperature)
    kd = kd_loss(s2, teacher, temperature)
    assert (soft - kd).item() == pytest.approx(temperature**2 * teacher_entropy, rel=1e-5)
    soft.backward()
    kd.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore:reduction")
def test_kl_div_mean_reduction_is_smaller_than_batchmean_by_the_number_of_classes() -> None:
    """The classic pitfall: reduction="mean" averages over N·C elements, not over the N samples."""
    student, teacher, _ = random_logits(c=10)
    temperature = 2.0
    log_ps = F.log_softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    mean = F.kl_div(log_ps, p_t, reduction="mean") * temperature**2
    batchmean = F.kl_div(log_ps, p_t, reduction="batchmean") * temperature**2
    assert batchmean.item() == pytest.approx(kd_loss(student, teacher, temperature).item(), rel=1e-5)
    assert (batchmean / mean).item() == pytest.approx(10.0, rel=1e-5)


def test_kd_gradient_scale_is_roughly_temperature_independent() -> None:
    """The T² factor: for large T the gradient tends to (p_s − p_t)·T/N → (s − t)/(C·N)."""
    student, teacher, _ = random_logits(n=4, c=10)
    student = student * 0.1
    teacher = teacher * 0.1
    norms = []
    for temperature in (10.0, 100.0):
        s = student.clone().requires_grad_(True)
        kd_loss(s, teacher, temperature).backward()
        norms.append(s.grad.norm().item())
    assert norms[0] == pytest.approx(norms[1], rel=0.05)


@pytest.mark.parametrize("temperature", [0, -1.0, math.nan, math.inf, "4"])
def test_bad_temperature_raises(temperature: object) -> None:
    student, teacher, targets = random_logits()
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(student, teacher, temperature)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        soft_cross_entropy(student, teacher, temperature)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, targets, temperature, 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [-0.1, 1.1, math.nan])
def test_bad_alpha_raises(alpha: float) -> None:
    student, teacher, targets = random_logits()
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(student, teacher, targets, 4.0, alpha)


def test_mismatched_logit_shapes_raise() -> None:
    student, teacher, targets = random_logits()
    with pytest.raises(ValueError, match="shape"):
        kd_loss(student, teacher[:, :5], 2.0)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(student[:4], teacher, 2.0)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(student.flatten(), teacher.flatten(), 2.0)
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(student, teacher[:, :5], targets, 2.0, 0.5)


def test_wrong_target_shape_raises() -> None:
    student, teacher, targets = random_logits()
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(student, teacher, targets[:-1], 2.0, 0.5)
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(student, teacher, targets.view(-1, 1), 2.0, 0.5)
    with pytest.raises(ValueError, match="targets"):  # soft (probability) targets are not labels
        distillation_loss(student, teacher, F.softmax(teacher, 1), 2.0, 0.0)


def test_numpy_and_tensor_hyper_parameters_are_accepted_but_bools_are_not() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    expected = distillation_loss(s, t, y, 4.0, 0.5)
    assert torch.allclose(distillation_loss(s, t, y, np.float32(4.0), np.float64(0.5)), expected)
    assert torch.allclose(distillation_loss(s, t, y, torch.tensor(4.0), torch.tensor(0.5)), expected)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, True)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, y, 4.0, True)
