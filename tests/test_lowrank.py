"""Tests of kdcourse.lowrank: nuclear norm and its penalty, truncated-SVD factorisation and its cost."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcourse.kd.hinton import HintonKD, distillation_loss
from kdcourse.lowrank import (
    NuclearPenalty,
    factorise_linear,
    first_linear,
    linear_macs,
    nuclear_norm,
    replace_first_linear,
    singular_values,
)
from kdcourse.models import mlp
from kdcourse.costs import count_macs


def random_matrix(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_nuclear_norm_is_the_sum_of_singular_values() -> None:
    for rows, cols in ((6, 4), (4, 6), (5, 5)):
        weight = random_matrix(rows, cols)
        expected = torch.linalg.svdvals(weight).sum()
        torch.testing.assert_close(nuclear_norm(weight), expected, rtol=1e-5, atol=1e-5)
    rank_one = torch.outer(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([3.0, 4.0]))  # σ = 3 · 5
    torch.testing.assert_close(nuclear_norm(rank_one), torch.tensor(15.0))


def test_nuclear_norm_gradient_is_u_v_transposed() -> None:
    weight = random_matrix(6, 4, seed=1).double().requires_grad_(True)
    u, s, vh = torch.linalg.svd(weight.detach(), full_matrices=False)
    assert s.min() > 1e-3 and (s[:-1] - s[1:]).min() > 1e-3  # full rank, distinct singular values
    nuclear_norm(weight).backward()
    torch.testing.assert_close(weight.grad, u @ vh, rtol=1e-8, atol=1e-8)


def test_singular_values_are_descending_and_detached() -> None:
    weight = random_matrix(7, 3).requires_grad_(True)
    values = singular_values(weight)
    assert values.shape == (3,) and not values.requires_grad
    assert torch.all(values[:-1] >= values[1:])
    torch.testing.assert_close(values, torch.linalg.svdvals(weight.detach()))
    with pytest.raises(ValueError, match="shape"):
        singular_values(torch.ones(3))


def test_first_linear_finds_the_input_layer() -> None:
    model = mlp([8, 6], in_features=12, num_classes=3)
    assert first_linear(model) is model[1]
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Identity(), nn.Linear(4, 2)), nn.Linear(2, 1))
    assert first_linear(nested) is nested[1][1]
    with pytest.raises(ValueError, match="no nn.Linear"):
        first_linear(nn.Sequential(nn.ReLU()))


def test_penalty_loss_adds_beta_times_the_nuclear_norm() -> None:
    torch.manual_seed(0)
    model = mlp([8], in_features=12, num_classes=3)
    x, y, teacher = torch.randn(5, 12), torch.tensor([0, 1, 2, 0, 1]), torch.randn(5, 3)

    base = HintonKD(2.0, 0.5)
    logits = model(x)
    penalised = NuclearPenalty(base, model, beta=0.25)(logits, y, teacher)
    expected = distillation_loss(logits, teacher, y, 2.0, 0.5) + 0.25 * torch.linalg.svdvals(model[1].weight.detach()).sum()
    torch.testing.assert_close(penalised, expected)
    torch.testing.assert_close(NuclearPenalty(base, model, beta=0)(logits, y, teacher), base(logits, y, teacher))
    assert NuclearPenalty(base, model, beta=0.25).extra_repr() == "beta=0.25, every=1, layer='1'"
    assert list(NuclearPenalty(base, model, beta=0.25).parameters()) == []  # the layer is the student's, not the method's
    # the penalty's gradient reaches the first layer only through W₁ (β · U Vᵀ on top of the base gradient)
    penalised.backward()
    assert model[1].weight.grad is not None


def test_penalty_loss_follows_the_training_updates() -> None:
    torch.manual_seed(0)
    model = mlp([8], in_features=12, num_classes=3)
    loss_fn = NuclearPenalty(lambda logits, targets: F.cross_entropy(logits, targets), model, beta=1.0)
    logits, y = model(torch.randn(4, 12)).detach(), torch.tensor([0, 1, 2, 0])
    before = loss_fn(logits, y)
    with torch.no_grad():
        model[1].weight.mul_(2)
    after = loss_fn(logits, y)
    torch.testing.assert_close(after - before, nuclear_norm(model[1].weight.detach()) / 2)


@pytest.mark.parametrize("beta", [-0.1, math.nan, math.inf])
def test_penalty_loss_rejects_a_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        NuclearPenalty(F.cross_entropy, mlp([4], in_features=6, num_classes=2), beta)


@pytest.mark.parametrize("shape", [(7, 5), (5, 7)])
def test_factorise_at_full_rank_reproduces_the_layer(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    out_features, in_features = shape
    layer = nn.Linear(in_features, out_features)
    pair = factorise_linear(layer, min(shape))
    down, up = pair
    assert (down.in_features, down.out_features, down.bias) == (in_features, min(shape), None)
    assert (up.in_features, up.out_features) == (min(shape), out_features)
    assert torch.equal(up.bias, layer.bias)
    x = torch.randn(10, in_features)
    with torch.no_grad():
        torch.testing.assert_close(pair(x), layer(x), rtol=0, atol=1e-4)


def test_factorise_without_bias() -> None:
    layer = nn.Linear(6, 4, bias=False)
    up = factorise_linear(layer, 2)[1]
    assert up.bias is None


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_truncation_error_is_eckart_young(rank: int) -> None:
    layer = nn.Linear(9, 6)
    with torch.no_grad():
        layer.weight.copy_(random_matrix(6, 9, seed=3))
    down, up = factorise_linear(layer, rank)
    approx = (up.weight @ down.weight).detach()
    sigma = torch.linalg.svdvals(layer.weight.detach().double())
    expected = sigma[rank:].pow(2).sum().sqrt()
    error = torch.linalg.matrix_norm(layer.weight.detach().double() - approx.double())
    torch.testing.assert_close(error, expected, rtol=1e-5, atol=1e-5)
    assert torch.linalg.matrix_rank(approx).item() == rank


@pytest.mark.parametrize("rank", [0, 7, -1])
def test_factorise_rejects_a_rank_out_of_range(rank: int) -> None:
    with pytest.raises(ValueError, match="rank"):
        factorise_linear(nn.Linear(6, 9), rank)


def test_replace_first_linear_copies_the_model() -> None:
    torch.manual_seed(0)
    model = mlp([32])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 28, 28)
    full = replace_first_linear(model, 32)
    low = replace_first_linear(model, 4)
    assert isinstance(model[1], nn.Linear) and model[1].weight.shape == (32, 784)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(low[1], nn.Sequential) and low[1][0].weight.shape == (4, 784)
    assert first_linear(low) is low[1][0]
    assert low[3] is not model[3] and torch.equal(low[3].weight, model[3].weight)
    with torch.no_grad():
        torch.testing.assert_close(full(x), model(x), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="no nn.Linear"):
        replace_first_linear(nn.Sequential(nn.ReLU()), 1)


def test_replace_first_linear_on_a_nested_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 8), nn.ReLU()), nn.Linear(8, 3))
    low = replace_first_linear(model, 8)
    assert isinstance(low[1][0], nn.Sequential)
    x = torch.randn(3, 12)
    with torch.no_grad():
        torch.testing.assert_close(low(x), model(x), rtol=0, atol=1e-4)


def test_linear_macs_arithmetic() -> None:
    assert linear_macs(784, 784) == 614_656
    assert linear_macs(784, 784, 64) == 64 * 1568 == 100_352
    assert linear_macs(784, 32, 32) == 32 * 816  # full rank of a thin layer costs more than the dense one
    for bad in (0, 33):
        with pytest.raises(ValueError, match="rank"):
            linear_macs(784, 32, bad)
    with pytest.raises(ValueError):
        linear_macs(0, 10)


def test_replaced_model_costs_the_stated_macs() -> None:
    # On top of the matrix products, ptflops counts ``out`` bias additions per Linear with a bias and one
    # operation per ReLU output; version 0.7.5 counts the ReLUs twice (the module and the F.relu it
    # calls). These extras are the same before and after the factorisation (the second factor keeps the
    # bias), so the saving is exactly the dense layer's MACs minus the factorised pair's.
    torch.manual_seed(0)
    model, rank = mlp([32]), 8
    low = replace_first_linear(model, rank)
    dense, factorised = count_macs(model, (1, 28, 28)), count_macs(low, (1, 28, 28))
    assert dense - factorised == linear_macs(784, 32) - linear_macs(784, 32, rank) == 25_088 - 6_528
    extra = dense - linear_macs(784, 32) - linear_macs(32, 10)
    assert extra == factorised - linear_macs(784, 32, rank) - linear_macs(32, 10)
    biases, relu_outputs = 32 + 10, 32
    assert biases + relu_outputs <= extra <= biases + 2 * relu_outputs
