"""Tests of kdcourse.studies.theory, the theory chapter's numerical checks."""

from __future__ import annotations

import pytest
import torch

from kdcourse.studies import theory


def test_high_temperature_gradient_approaches_the_centred_logit_difference() -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(64, 10, generator=gen), 2 * torch.randn(64, 10, generator=gen) + 3
    grads = theory.temperature_gradients(student, teacher, [1, 8, 64])
    distance = grads["rel. distance to the high-T limit"]
    assert distance[64] < distance[8] < distance[1] and distance[64] < 0.05
    # without T², the gradient falls like 1/T²
    unscaled = grads["|grad| of KL (without T²)"]
    assert unscaled[64] / unscaled[8] == pytest.approx(1 / 64, rel=0.05)
    assert grads.loc[64, "T²·KL"] == pytest.approx(grads.loc[64, "‖centred s − centred t‖² / 2N"], rel=0.01)


def test_same_direction_finds_the_factor_and_no_residual() -> None:
    g = torch.randn(8, 5)
    scale, residual = theory.same_direction(3 * g, g)
    assert scale == pytest.approx(3) and residual < 1e-6
    assert theory.same_direction(g, torch.randn(8, 5))[1] > 0.1


def test_loss_gradient_leaves_the_logits_alone() -> None:
    logits = torch.tensor([[1.0, 2.0]])
    assert torch.equal(theory.loss_gradient(lambda s: (s**2).sum(), logits), 2 * logits)
    assert not logits.requires_grad


def test_identity_shortcuts_keep_the_gradient_of_the_first_layers() -> None:
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    plain = theory.relative_grad_norms(x, torch.tanh, depth=20)
    residual = theory.relative_grad_norms(x, torch.tanh, depth=20, residual=True)
    assert plain[-1] == residual[-1] == 1
    assert plain[0] < 1e-3 < 0.1 < residual[0]


def test_mobilenet_v2_counts_match_torchvision_and_keras() -> None:
    costs = theory.mobilenet_v2_costs(classes=(2,))
    assert costs.loc[2, "parameters"] == 2_226_434
    assert costs.loc[2, "+ BatchNorm running statistics"] == 2_260_546  # Keras's count
    assert 300e6 < costs.loc[2, "MACs per image (224×224)"] < 340e6
