"""Tests of kdcourse.kd.subclass: subclass aggregation, the auxiliary loss, the MNIST layout and diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdcourse.kd.hinton import kd_loss
from kdcourse.kd.subclass import class_logits_from_subclasses, contingency, known_subclass_targets, mnist_superclass, subclass_assignments, subclass_auxiliary_loss, subclass_digit_nmi, subclass_distillation_loss, subclass_usage


def random_logits(seed: int = 0, n: int = 8, width: int = 10, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) * scale


def aux_reference(logits: torch.Tensor, temperature: float) -> float:
    """The auxiliary loss written out in float64 numpy, loops over examples (eps = 0)."""
    x = logits.double().numpy()
    n, k = x.shape
    z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True) / math.sqrt(temperature * k)
    total = 0.0
    for i in range(n):
        dots = np.array([z[i] @ z[j] for j in range(n)])
        total += math.log(np.exp(dots).sum())
    return total / n - 1.0 / temperature - math.log(n)


# --- aggregation -------------------------------------------------------------------------------


@pytest.mark.parametrize("subclasses_per_class", [1, 2, 5])
def test_class_probabilities_are_sums_of_subclass_probabilities(subclasses_per_class: int) -> None:
    logits = random_logits(width=10)
    class_logits = class_logits_from_subclasses(logits, subclasses_per_class)
    assert class_logits.shape == (8, 10 // subclasses_per_class)
    class_probs = F.softmax(class_logits, dim=1)
    summed = F.softmax(logits, dim=1).reshape(8, -1, subclasses_per_class).sum(dim=2)
    torch.testing.assert_close(class_probs.sum(dim=1), torch.ones(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(class_probs, summed, atol=1e-6, rtol=0)


def test_aggregation_equals_naive_log_sum_exp_of_consecutive_columns() -> None:
    logits = random_logits(width=6, scale=2.0).double()
    expected = torch.stack([logits[:, 3 * c : 3 * c + 3].exp().sum(dim=1).log() for c in range(2)], dim=1)
    torch.testing.assert_close(class_logits_from_subclasses(logits, 3), expected)


def test_aggregation_shifts_with_a_constant_and_keeps_probabilities() -> None:
    logits = random_logits(width=10)
    base = class_logits_from_subclasses(logits, 5)
    shifted = class_logits_from_subclasses(logits + 7.5, 5)
    torch.testing.assert_close(shifted, base + 7.5)
    torch.testing.assert_close(F.softmax(shifted, dim=1), F.softmax(base, dim=1))


@pytest.mark.parametrize(
    ("shape", "subclasses_per_class"), [((4, 10), 3), ((4, 10), 0), ((10,), 5), ((2, 4, 10), 5), ((4, 0), 2)]
)
def test_aggregation_rejects_bad_shapes(shape: tuple[int, ...], subclasses_per_class: int) -> None:
    with pytest.raises(ValueError):
        class_logits_from_subclasses(torch.zeros(shape), subclasses_per_class)


# --- auxiliary loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_auxiliary_loss_matches_reference_and_lies_in_minus_log_n_to_zero(temperature: float) -> None:
    logits = random_logits(n=12, width=10)
    value = subclass_auxiliary_loss(logits, temperature, eps=0.0).item()
    assert value == pytest.approx(aux_reference(logits, temperature), abs=1e-5)
    assert -math.log(12) - 1e-6 <= value <= 1e-6


@pytest.mark.parametrize(("n", "k", "temperature"), [(10, 10, 1.0), (4, 10, 1.0), (3, 4, 0.5)])
def test_auxiliary_loss_is_zero_when_collapsed_and_negative_when_spread(n: int, k: int, temperature: float) -> None:
    # collapsed: every example has the same logits, so every entry of Z Zᵀ is 1/T and the loss is 0
    collapsed = random_logits(n=1, width=k).repeat(n, 1)
    collapsed_value = subclass_auxiliary_loss(collapsed, temperature).item()
    assert collapsed_value == pytest.approx(0.0, abs=1e-5)
    # spread: one-hot on distinct subclasses; normalised rows have correlation −1/(K − 1)
    spread = 4.0 * torch.eye(k)[:n]
    spread_value = subclass_auxiliary_loss(spread, temperature).item()
    expected = math.log(1 + (n - 1) * math.exp(-k / (temperature * (k - 1)))) - math.log(n)
    assert spread_value == pytest.approx(expected, abs=1e-5)
    assert spread_value < collapsed_value - 0.3


def test_auxiliary_loss_ignores_per_example_shift_and_scale() -> None:
    logits = random_logits(n=6, width=8)
    shift = torch.arange(6.0).unsqueeze(1)
    scale = torch.linspace(0.5, 4.0, 6).unsqueeze(1)
    torch.testing.assert_close(subclass_auxiliary_loss(logits * scale + shift), subclass_auxiliary_loss(logits))


def test_auxiliary_loss_of_a_single_example_is_zero() -> None:
    assert subclass_auxiliary_loss(random_logits(n=1)).item() == pytest.approx(0.0, abs=1e-6)


def test_auxiliary_loss_gradient_pushes_examples_apart() -> None:
    logits = random_logits(n=8, width=10, scale=0.1).requires_grad_(True)
    loss = subclass_auxiliary_loss(logits)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    stepped = subclass_auxiliary_loss(logits.detach() - 0.01 * logits.grad)
    assert stepped.item() < loss.item()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
def test_auxiliary_loss_rejects_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError):
        subclass_auxiliary_loss(random_logits(), temperature)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4), (0, 10), (5, 1)])
def test_auxiliary_loss_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        subclass_auxiliary_loss(torch.zeros(shape))


# --- MNIST layout ------------------------------------------------------------------------------


def test_mnist_superclass_and_known_subclasses_follow_the_aggregation_layout() -> None:
    digits = torch.arange(10)
    classes = mnist_superclass(digits)
    assert classes.dtype == torch.int64
    assert classes.tolist() == [0] * 5 + [1] * 5
    subclasses = known_subclass_targets(digits)
    assert subclasses.dtype == torch.int64 and subclasses.tolist() == list(range(10))
    # a logit vector peaked at the known subclass must predict the right class after aggregation
    peaked = 10.0 * F.one_hot(subclasses, 10).float()
    assert class_logits_from_subclasses(peaked, 5).argmax(dim=1).tolist() == classes.tolist()
    assert subclass_assignments(peaked, 5).tolist() == subclasses.tolist()


@pytest.mark.parametrize("digits", [torch.tensor([0, 10]), torch.tensor([-1]), torch.tensor([1.0]), torch.zeros(2, 2)])
def test_mnist_mapping_rejects_non_digits(digits: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        mnist_superclass(digits)
    with pytest.raises(ValueError):
        known_subclass_targets(digits)


# --- distillation loss -------------------------------------------------------------------------


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.0, 1.0)])
def test_subclass_distillation_loss_combines_kd_and_class_cross_entropy(temperature: float, alpha: float) -> None:
    student, teacher = random_logits(0), random_logits(1)
    targets = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    value = subclass_distillation_loss(student, teacher, targets, 5, temperature, alpha)
    # independent computation: class logits by explicit log-sum-exp, KL in float64
    s, t = student.double(), teacher.double()
    class_logits = torch.stack([s[:, :5].exp().sum(1).log(), s[:, 5:].exp().sum(1).log()], dim=1)
    hard = F.cross_entropy(class_logits, targets)
    log_ps, log_pt = F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1)
    soft = temperature**2 * (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
    assert value.item() == pytest.approx((alpha * soft + (1 - alpha) * hard).item(), rel=1e-5)


def test_subclass_distillation_loss_special_cases() -> None:
    student, teacher = random_logits(0), random_logits(1)
    targets = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    plain = F.cross_entropy(class_logits_from_subclasses(student, 5), targets)
    torch.testing.assert_close(subclass_distillation_loss(student, teacher, targets, 5, 3.0, 0.0), plain)
    assert kd_loss(student, student.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(
        subclass_distillation_loss(student, student.clone(), targets, 5, 3.0, 0.4), 0.6 * plain, atol=1e-6, rtol=0
    )


def test_subclass_distillation_loss_gradient_reaches_student_only() -> None:
    student = random_logits(0).requires_grad_(True)
    teacher = random_logits(1).requires_grad_(True)
    subclass_distillation_loss(student, teacher, torch.zeros(8, dtype=torch.long), 5, 2.0, 0.5).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize(
    ("kwargs", "targets"),
    [({"temperature": 0.0, "alpha": 0.5}, None), ({"temperature": 1.0, "alpha": 1.5}, None), ({}, torch.zeros(3))],
)
def test_subclass_distillation_loss_rejects_bad_inputs(kwargs: dict, targets: torch.Tensor | None) -> None:
    arguments = {"temperature": 2.0, "alpha": 0.5} | kwargs
    targets = torch.zeros(8, dtype=torch.long) if targets is None else targets.long()
    with pytest.raises(ValueError):
        subclass_distillation_loss(random_logits(0), random_logits(1), targets, 5, **arguments)
    with pytest.raises(ValueError):
        subclass_distillation_loss(random_logits(0), random_logits(1, width=8), torch.zeros(8, dtype=torch.long), 5, 2.0, 0.5)


# --- diagnostics -------------------------------------------------------------------------------


def test_assignments_pick_the_best_subclass_of_the_predicted_class() -> None:
    # class 1 wins on log-sum-exp (two fairly strong subclasses) although subclass 0 is the overall maximum
    logits = torch.tensor([[5.0, -9.0, 4.9, 4.8], [0.0, 3.0, -1.0, -2.0]])
    assert class_logits_from_subclasses(logits, 2).argmax(dim=1).tolist() == [1, 0]
    assert subclass_assignments(logits, 2).tolist() == [2, 1]


def test_usage_sums_to_one_and_counts_fractions() -> None:
    assignments = torch.tensor([0, 0, 3, 3, 3, 9])
    usage = subclass_usage(assignments, 10)
    assert usage.shape == (10,)
    assert usage.sum().item() == pytest.approx(1.0)
    assert usage[3].item() == pytest.approx(0.5) and usage[1].item() == 0.0
    with pytest.raises(ValueError):
        subclass_usage(assignments, 5)


def test_contingency_shape_and_totals() -> None:
    digits = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(0))
    assignments = (digits * 3) % 10
    table = contingency(assignments, digits, 10)
    assert table.shape == (10, 10) and table.dtype == torch.int64
    assert table.sum().item() == 200
    assert table.sum(dim=0).tolist() == torch.bincount(digits, minlength=10).tolist()
    assert table[(3 * 7) % 10, 7].item() == (digits == 7).sum().item()
    with pytest.raises(ValueError):
        contingency(assignments[:-1], digits, 10)


def test_nmi_is_one_for_a_relabelling_and_low_for_unrelated_assignments() -> None:
    digits = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    relabelled = (digits * 7 + 3) % 10
    assert subclass_digit_nmi(relabelled, digits) == pytest.approx(1.0)
    unrelated = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(1))
    assert subclass_digit_nmi(unrelated, digits) < 0.1
