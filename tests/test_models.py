"""Tests of kdcourse.models and kdcourse.costs: architectures, parameter counts and costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcourse import models
from kdcourse.costs import count_macs, profile_model

MNIST_SHAPE = (1, 28, 28)


def weight_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the Conv2d and Linear weights only, counted independently with hooks."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:  # Conv2d: one MAC per weight per output position
            total += module.weight.numel() * output.shape[-2] * output.shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize(
    ("factory", "parameters"),
    [(models.mnist_teacher, 1_011_466), (models.mnist_student, 1_238_730), (models.mnist_assistant, 56_714)],
)
def test_parameter_counts_match_the_documented_architectures(factory, parameters: int) -> None:
    model = factory()
    assert models.count_parameters(model) == parameters
    assert models.count_parameters(model, trainable_only=True) == parameters


def test_count_parameters_trainable_only_skips_frozen_weights() -> None:
    model = models.mnist_student()
    model[1].weight.requires_grad_(False)
    assert models.count_parameters(model) == 1_238_730
    assert models.count_parameters(model, trainable_only=True) == 1_238_730 - 784 * 784


@pytest.mark.parametrize("factory", [models.mnist_teacher, models.mnist_student, models.mnist_assistant])
@pytest.mark.parametrize("batch", [1, 5])
def test_models_map_images_to_ten_logits(factory, batch: int) -> None:
    model = factory().eval()
    with torch.no_grad():
        logits = model(torch.randn(batch, *MNIST_SHAPE))
    assert logits.shape == (batch, 10)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_mlp_structure_and_dropout_option() -> None:
    plain = models.mlp([32, 16], in_features=20, num_classes=3)
    assert [type(m) for m in plain] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [m.out_features for m in plain if isinstance(m, nn.Linear)] == [32, 16, 3]
    assert plain(torch.randn(4, 4, 5)).shape == (4, 3)
    with_dropout = models.mlp([32, 16], in_features=20, num_classes=3, dropout=0.2)
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout) == 2
    assert sum(isinstance(m, nn.Dropout) for m in models.mnist_student()) == 0


def test_teacher_dropout_is_active_only_in_training_mode() -> None:
    torch.manual_seed(0)
    model = models.mnist_teacher()
    x = torch.randn(3, *MNIST_SHAPE)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_weight_macs_of_the_mnist_models() -> None:
    # conv 26·26·32·9 + conv 23·23·64·288 + 7744·128 + 128·10
    assert weight_macs(models.mnist_teacher(), MNIST_SHAPE) == 194_688 + 9_750_528 + 991_232 + 1_280
    assert weight_macs(models.mnist_student(), MNIST_SHAPE) == 2 * 784 * 784 + 7_840
    assert weight_macs(models.mnist_assistant(), MNIST_SHAPE) == 97_344 + 557_568 + 51_200 + 640


def test_count_macs_of_a_single_linear_layer_counts_weights_and_bias() -> None:
    assert count_macs(nn.Linear(784, 10), (784,)) == 784 * 10 + 10
    assert count_macs(nn.Linear(784, 10, bias=False), (784,)) == 784 * 10


@pytest.mark.parametrize(
    ("factory", "ptflops_macs"),
    [(models.mnist_student, 1.2419e6), (models.mnist_teacher, 11.216e6), (models.mnist_assistant, 0.7804e6)],
)
def test_count_macs_of_the_mnist_models(factory, ptflops_macs: float) -> None:
    """ptflops counts the weight MACs plus bias additions, ReLUs and pooling (a few percent more)."""
    model = factory()
    macs = count_macs(model, MNIST_SHAPE)
    assert macs == pytest.approx(ptflops_macs, rel=0.01)
    exact = weight_macs(model, MNIST_SHAPE)
    assert exact <= macs <= 1.12 * exact


def test_count_macs_leaves_the_model_usable_and_unchanged() -> None:
    torch.manual_seed(0)
    model = models.mnist_student().eval()
    x = torch.randn(2, *MNIST_SHAPE)
    with torch.no_grad():
        before = model(x)
    count_macs(model, MNIST_SHAPE)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_profile_model_reports_consistent_costs() -> None:
    model = models.mnist_student()
    model.train()
    cost = profile_model(model, MNIST_SHAPE, batched=16, repeats=5)
    assert cost.parameters == 1_238_730
    assert cost.macs == count_macs(models.mnist_student(), MNIST_SHAPE)
    assert cost.flops == 2 * cost.macs
    assert cost.latency_ms_batch1 > 0
    assert cost.latency_ms_per_sample_batched > 0
    assert model.training  # profiling restores the mode
    row = cost.as_row()
    assert set(row) == {"parameters", "macs", "flops", "latency_ms_batch1", "latency_ms_per_sample_batched"}


def test_count_macs_keeps_the_training_mode() -> None:
    model = models.mnist_teacher().train()
    count_macs(model, MNIST_SHAPE)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    count_macs(model, MNIST_SHAPE)
    assert not model.training


def test_count_macs_raises_when_the_forward_pass_fails() -> None:
    with pytest.raises(RuntimeError, match="MACs"):
        count_macs(models.mnist_student(), (3, 32, 32))  # 3072 inputs for a 784-input MLP


def test_byte_mask_dropout_drops_at_its_rate_and_scales_the_rest() -> None:
    torch.manual_seed(0)
    layer = models.ByteMaskDropout(0.25)
    x = torch.ones(400, 1000)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005  # 400,000 draws: the std of the rate is 0.0007
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert torch.allclose(y.mean(), torch.tensor(1.0), atol=0.01)  # unbiased, like nn.Dropout
    assert abs(kept[:, :8].float().mean().item() - 0.75) < 0.03  # every byte of a draw is used evenly
    layer.eval()
    assert torch.equal(layer(x), x)


def test_byte_mask_dropout_is_seeded_and_passes_gradients_through_kept_elements() -> None:
    layer = models.ByteMaskDropout(0.5)
    x = torch.randn(3, 5, 7, requires_grad=True)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    first.sum().backward()
    assert torch.equal(x.grad, (first != 0).float() * 2.0)


@pytest.mark.parametrize("p", [0.3, 1.0, -0.5])
def test_byte_mask_dropout_needs_a_multiple_of_one_256th_below_one(p: float) -> None:
    with pytest.raises(ValueError, match="multiple of 1/256"):
        models.ByteMaskDropout(p)


def test_the_teacher_drops_with_byte_masks() -> None:
    assert sum(isinstance(m, models.ByteMaskDropout) for m in models.mnist_teacher()) == 2
