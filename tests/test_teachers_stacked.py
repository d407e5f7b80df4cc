"""Tests of kdcourse.kd.stacked and kdcourse.kd.teachers: stacked student grids, the grid loss and cached teacher logits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcourse.data import TensorBatches
from kdcourse.kd.stacked import StackedMLP, grid_distillation_loss
from kdcourse.kd.teachers import teacher_logits
from kdcourse.kd.hinton import distillation_loss
from kdcourse.models import mlp
from kdcourse.train import evaluate, fit

IN, CLASSES, HIDDEN = 16, 5, [32, 24]


def members(count: int, hidden: list[int] = HIDDEN) -> list[nn.Sequential]:
    """``count`` MLPs of one shape with different initial weights."""
    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        nets.append(mlp(hidden, in_features=IN, num_classes=CLASSES))
    return nets


@pytest.fixture(scope="module")
def task() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, IN, generator=generator)
    y = torch.randint(0, CLASSES, (200,), generator=generator)
    teacher = torch.randn(200, CLASSES, generator=generator) * 3
    return {"x": x, "y": y, "teacher": teacher}


def assert_close_modules(a: nn.Module, b: nn.Module, atol: float = 1e-5) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=atol, msg=key)


# ---------------------------------------------------------------- StackedMLP


def test_stacked_mlp_reproduces_every_member(task) -> None:
    nets = members(4)
    stacked = StackedMLP(nets)
    assert stacked.num_members == 4
    with torch.no_grad():
        logits = stacked(task["x"])
        assert logits.shape == (4, 200, CLASSES)
        for index, net in enumerate(nets):
            torch.testing.assert_close(logits[index], net(task["x"]), rtol=0, atol=1e-5)


def test_stacked_mlp_flattens_image_inputs() -> None:
    torch.manual_seed(0)
    nets = [mlp([8], in_features=12, num_classes=3) for _ in range(2)]
    x = torch.randn(5, 1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(StackedMLP(nets)(x)[1], nets[1](x), rtol=0, atol=1e-6)


def test_stacked_mlp_state_tensors_are_indexed_by_member_first() -> None:
    stacked = StackedMLP(members(3))
    for name, tensor in stacked.state_dict().items():
        assert tensor.shape[0] == 3, name
    assert [tuple(w.shape) for w in stacked.weights] == [(3, IN, 32), (3, 32, 24), (3, 24, CLASSES)]
    assert [tuple(b.shape) for b in stacked.biases] == [(3, 1, 32), (3, 1, 24), (3, 1, CLASSES)]


def test_stacked_mlp_copies_the_members() -> None:
    nets = members(2)
    stacked = StackedMLP(nets)
    with torch.no_grad():
        stacked.weights[0].zero_()
    assert nets[0][1].weight.abs().sum() > 0  # the members were copied, not shared


def test_member_returns_an_equivalent_plain_mlp(task) -> None:
    nets = members(3)
    stacked = StackedMLP(nets)
    for index, net in enumerate(nets):
        member = stacked.member(index)
        assert isinstance(member, nn.Sequential)
        assert [type(m) for m in member] == [type(m) for m in net]
        assert not member.training
        assert_close_modules(member, net, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(member(task["x"]), stacked(task["x"])[index], rtol=0, atol=1e-5)


def test_stacked_mlp_of_a_single_linear_layer(task) -> None:
    torch.manual_seed(0)
    nets = [mlp([], in_features=IN, num_classes=CLASSES) for _ in range(2)]
    stacked = StackedMLP(nets)
    with torch.no_grad():
        torch.testing.assert_close(stacked(task["x"])[1], nets[1](task["x"]), rtol=0, atol=1e-5)
    assert_close_modules(stacked.member(1), nets[1], atol=0)


def test_stacked_mlp_rejects_dropout_other_layers_and_mixed_shapes() -> None:
    with pytest.raises(ValueError):
        StackedMLP([])
    with pytest.raises(ValueError, match="dropout"):
        StackedMLP([mlp(HIDDEN, in_features=IN, dropout=0.1), mlp(HIDDEN, in_features=IN, dropout=0.1)])
    with pytest.raises(ValueError):
        StackedMLP([nn.Sequential(nn.Flatten(), nn.Linear(IN, 8), nn.Tanh(), nn.Linear(8, CLASSES))])
    with pytest.raises(ValueError, match="shape"):
        StackedMLP([mlp([32], in_features=IN), mlp([16], in_features=IN)])
    with pytest.raises(ValueError, match="shape"):
        StackedMLP([mlp([32], in_features=IN), mlp([32, 32], in_features=IN)])


# ---------------------------------------------------------------- grid loss


def test_grid_distillation_loss_equals_distillation_loss_per_member(task) -> None:
    generator = torch.Generator().manual_seed(1)
    temperatures = [1.0, 4.0, 2.5, 1.0, 16.0]
    alphas = [0.5, 0.9, 0.0, 1.0, 0.3]
    logits = torch.randn(len(temperatures), 32, CLASSES, generator=generator) * 2
    teacher, targets = task["teacher"][:32], task["y"][:32]
    losses = grid_distillation_loss(logits, teacher, targets, torch.tensor(temperatures), torch.tensor(alphas))
    assert losses.shape == (len(temperatures),)
    for g, (temperature, alpha) in enumerate(zip(temperatures, alphas)):
        expected = distillation_loss(logits[g], teacher, targets, temperature, alpha)
        assert losses[g].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_grid_distillation_loss_gradients_match_and_skip_the_teacher(task) -> None:
    temperatures, alphas = torch.tensor([2.0, 1.0]), torch.tensor([0.7, 0.0])
    generator = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 16, CLASSES, generator=generator)).requires_grad_(True)
    teacher = task["teacher"][:16].clone().requires_grad_(True)
    targets = task["y"][:16]
    grid_distillation_loss(logits, teacher, targets, temperatures, alphas).sum().backward()
    assert teacher.grad is None
    for g in range(2):
        single = logits[g].detach().clone().requires_grad_(True)
        distillation_loss(single, teacher, targets, temperatures[g].item(), alphas[g].item()).backward()
        torch.testing.assert_close(logits.grad[g], single.grad, rtol=1e-5, atol=1e-7)


def test_grid_distillation_loss_rejects_bad_arguments(task) -> None:
    logits = torch.randn(2, 8, CLASSES)
    teacher, targets = task["teacher"][:8], task["y"][:8]
    with pytest.raises(ValueError, match="temperature"):
        grid_distillation_loss(logits, teacher, targets, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="alpha"):
        grid_distillation_loss(logits, teacher, targets, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError):
        grid_distillation_loss(logits, teacher, targets, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError):
        grid_distillation_loss(logits[0], teacher, targets, torch.tensor([1.0]), torch.tensor([0.5]))


# ---------------------------------------------------------------- training side by side


def test_training_a_stack_equals_training_each_member_alone(task) -> None:
    """The key claim: stacking members changes nothing about how each one trains."""
    temperatures, alphas = torch.tensor([1.0, 4.0, 2.0]), torch.tensor([0.5, 0.9, 0.0])
    nets = members(3)
    alone = [copy.deepcopy(net) for net in nets]
    batches = TensorBatches(task["x"], task["y"], task["teacher"], batch_size=32, seed=3)
    stacked = StackedMLP(nets)

    def grid_loss(logits: torch.Tensor, targets: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return grid_distillation_loss(logits, teacher, targets, temperatures, alphas).sum()

    fit(stacked, batches, grid_loss, epochs=2, lr=1e-2, schedule="cosine", seed=0, progress=False)
    for index, net in enumerate(alone):
        temperature, alpha = temperatures[index].item(), alphas[index].item()

        def single_loss(logits, targets, teacher, temperature=temperature, alpha=alpha):
            return distillation_loss(logits, teacher, targets, temperature, alpha)

        fit(net, batches, single_loss, epochs=2, lr=1e-2, schedule="cosine", seed=0, progress=False)
        assert not torch.equal(net[1].weight, nets[index][1].weight)  # it did train
        assert_close_modules(stacked.member(index), net, atol=1e-5)


def test_fit_selects_the_best_epoch_of_each_member_separately(task) -> None:
    """Member 0 learns the validation labels, member 1 learns shifted ones: their best epochs differ."""
    x, y = task["x"], task["y"]
    rule = torch.randn(IN, CLASSES, generator=torch.Generator().manual_seed(5))
    y = (x @ rule).argmax(1)  # a learnable rule
    batches = TensorBatches(x, y, batch_size=25, seed=0)

    def opposed_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[0], targets) + F.cross_entropy(logits[1], (targets + 1) % CLASSES)

    def trained(epochs: int, restore_best: bool = True) -> tuple[StackedMLP, object]:
        model = StackedMLP(members(2))
        result = fit(model, batches, opposed_loss, epochs=epochs, val_data=(x, y), lr=3e-3, restore_best=restore_best, progress=False)
        return model, result

    model, result = trained(4)
    assert isinstance(result.best_epoch, list) and len(result.best_epoch) == 2
    accuracies = [h["val_accuracy"] for h in result.history]
    for g in range(2):
        per_epoch = [a[g] for a in accuracies]
        assert result.best_val_score[g] == max(per_epoch)
        assert result.best_epoch[g] == per_epoch.index(max(per_epoch)) + 1
    assert result.best_epoch[0] > result.best_epoch[1]
    assert evaluate(model, x, y)["accuracy"] == pytest.approx(result.best_val_score)
    for g in range(2):  # each member holds the weights of its own best epoch
        at_best, _ = trained(result.best_epoch[g], restore_best=False)
        assert_close_modules(model.member(g), at_best.member(g), atol=0)


# ---------------------------------------------------------------- cached teacher logits


def explode(*_: object) -> None:
    raise AssertionError("the cached logits should have been used")


def test_teacher_logits_are_computed_in_eval_mode(task) -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(IN, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, CLASSES)).train()
    logits = teacher_logits(teacher, task["x"])
    with torch.no_grad():
        expected = teacher.eval()(task["x"])
    torch.testing.assert_close(logits, expected)
    assert logits.dtype == torch.float32 and not logits.requires_grad


def test_teacher_logits_cache_is_written_then_reused(task, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = mlp([8], in_features=IN, num_classes=CLASSES)
    cache = tmp_path / "sub" / "teacher_logits.pt"
    first = teacher_logits(teacher, task["x"], cache=cache)
    assert cache.is_file()
    torch.testing.assert_close(torch.load(cache, weights_only=True)["value"], first)
    hook = teacher.register_forward_pre_hook(explode)  # the same weights: the teacher must not run again
    second = teacher_logits(teacher, task["x"], cache=cache)
    assert torch.equal(first, second)
    hook.remove()


def test_teacher_logits_cache_of_another_teacher_or_other_inputs_is_recomputed(task, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = mlp([8], in_features=IN, num_classes=CLASSES)
    cache = tmp_path / "teacher_logits.pt"
    first = teacher_logits(teacher, task["x"], cache=cache)
    with torch.no_grad():
        teacher[-1].bias.add_(1.0)  # a retrained teacher: same shapes, other weights
    shifted = teacher_logits(teacher, task["x"], cache=cache)
    torch.testing.assert_close(shifted, first + 1.0)
    other_inputs = task["x"].flip(0)  # same row count, other rows
    torch.testing.assert_close(teacher_logits(teacher, other_inputs, cache=cache), shifted.flip(0))


def test_teacher_logits_cache_with_another_row_count_is_recomputed(task, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = mlp([8], in_features=IN, num_classes=CLASSES)
    cache = tmp_path / "teacher_logits.pt"
    teacher_logits(teacher, task["x"][:10], cache=cache)
    logits = teacher_logits(teacher, task["x"], cache=cache)
    assert logits.shape == (200, CLASSES)
    assert torch.load(cache, weights_only=True)["value"].shape == (200, CLASSES)
