"""Tests of the distillation-method interface (kdcourse.kd.method, kdcourse.kd.features) and of the feature
methods built on it: FitNets hints (kdcourse.kd.fitnets) and attention transfer (kdcourse.kd.attention)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse import checkpoints
from kdcourse.data import TensorBatches
from kdcourse.kd.attention import AttentionTransfer, attention_map
from kdcourse.kd.features import TeacherFeatures, capture
from kdcourse.kd.fitnets import FitNets
from kdcourse.kd.hinton import HintonKD, distillation_loss
from kdcourse.kd.method import CrossEntropy, LossFunction, Method, as_method
from kdcourse.kd.subclass import SubclassKD, subclass_distillation_loss
from kdcourse.lowrank import NuclearPenalty
from kdcourse.train import fit


def cnn(width: int, seed: int) -> nn.Sequential:
    """A tiny CNN on (N, 1, 8, 8): conv → ReLU (8×8) → conv stride 2 → ReLU (4×4) → pool → 3 logits."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
        nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 3),
    )


@pytest.fixture(scope="module")
def images() -> tuple[Tensor, Tensor]:
    """96 images of three classes: a bright row, column or diagonal, in noise."""
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    x = 0.3 * torch.randn(96, 1, 8, 8, generator=generator)
    for i, label in enumerate(y.tolist()):
        if label == 0:
            x[i, 0, 3] += 1
        elif label == 1:
            x[i, 0, :, 3] += 1
        else:
            x[i, 0] += torch.eye(8)
    return x, y


@pytest.fixture(scope="module")
def teacher(images) -> nn.Sequential:
    x, y = images
    network = cnn(6, seed=1)
    fit(network, TensorBatches(x, y, batch_size=16, seed=0), epochs=3, lr=1e-2, progress=False)
    network.zero_grad(set_to_none=True)
    return network.eval()


def fitnets(teacher: nn.Module, base: Method | None = None, seed: int = 2) -> FitNets:
    torch.manual_seed(seed)
    return FitNets(teacher, hint="2", guided="2", regressor=nn.Conv2d(8, 12, 1), weight=0.5, base=base)


def attention(teacher: nn.Module) -> AttentionTransfer:
    return AttentionTransfer(teacher, [("1", "1"), ("4", "4")], beta=100.0, base=CrossEntropy())


# ------------------------------------------------------------------ the interface


def test_a_plain_function_is_called_as_fit_always_called_it() -> None:
    seen = {}

    def loss_fn(logits: Tensor, targets: Tensor, soft: Tensor) -> Tensor:
        seen["dtype"] = logits.dtype
        return F.cross_entropy(logits, targets) + soft.sum()

    method = as_method(loss_fn)
    assert isinstance(method, LossFunction) and method.student_features == ()
    logits = torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16)
    value = method(logits, torch.tensor([0]), torch.tensor([0.25]), inputs=None, features={})
    assert seen["dtype"] == torch.float32
    torch.testing.assert_close(value, F.cross_entropy(logits.float(), torch.tensor([0])) + 0.25)
    assert isinstance(as_method(None), CrossEntropy)
    kd = HintonKD(4.0, 0.5)
    assert as_method(kd) is kd


@pytest.mark.parametrize("kind", ["hinton", "subclass"])
def test_a_method_trains_to_the_weights_of_the_function_it_replaces(images, kind: str) -> None:
    """A method casts the outputs once, as ``fit`` did for the former closures: under bf16 autocast a run
    gives bit for bit the closure's weights (casting twice inside the loss sums the gradients in bf16)."""
    x, y = images
    soft = torch.randn(len(y), 4, generator=torch.Generator().manual_seed(1))
    targets = y % 2  # two classes of two subclasses each for the subclass objective
    batches = TensorBatches(x.flatten(1), targets, soft, batch_size=32, seed=0)
    closures = {
        "hinton": (lambda s, t, teacher: distillation_loss(s, teacher, t, 4, 0.5), HintonKD(4, 0.5)),
        "subclass": (lambda s, t, teacher: subclass_distillation_loss(s, teacher, t, 2, 4, 0.5), SubclassKD(2, 4, 0.5)),
    }
    trained = []
    for loss in closures[kind]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))
        fit(model, batches, loss, epochs=2, lr=1e-2, schedule="cosine", amp_dtype=torch.bfloat16, progress=False)
        trained.append(model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_fit_gives_a_method_the_outputs_untouched_and_the_hooked_features(images) -> None:
    x, y = images

    class Recorder(Method):
        student_features = ("2", "6")

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple] = []

        def forward(self, outputs, targets, *extras, inputs=None, features=None):
            self.calls.append((outputs.dtype, tuple(inputs.shape), {k: tuple(v.shape) for k, v in features.items()}, extras))
            return F.cross_entropy(outputs.float(), targets)

    student, recorder = cnn(4, seed=0), Recorder()
    fit(student, TensorBatches(x, y, batch_size=32), recorder, epochs=1, amp_dtype=torch.bfloat16, progress=False)
    assert [call[0] for call in recorder.calls] == [torch.bfloat16] * 3  # no cast in fit
    assert recorder.calls[0][1:] == ((32, 1, 8, 8), {"2": (32, 8, 4, 4), "6": (32, 8)}, ())
    assert all(not module._forward_hooks for module in student.modules())  # removed after the run


def test_the_hooks_are_removed_when_the_run_fails(images) -> None:
    x, y = images

    class Failing(Method):
        student_features = ("1",)

        def forward(self, outputs, targets, *extras, inputs=None, features=None):
            raise RuntimeError("boom")

    student = cnn(4, seed=0)
    with pytest.raises(RuntimeError, match="boom"):
        fit(student, TensorBatches(x, y, batch_size=32), Failing(), epochs=1, progress=False)
    assert all(not module._forward_hooks for module in student.modules())


def test_capture_refuses_an_unknown_path_and_a_teacher_stays_frozen_in_eval_mode(teacher) -> None:
    with pytest.raises(AttributeError, match="nine"):
        with capture(teacher, ["nine"]):
            pass
    features = TeacherFeatures(teacher, ["4"])
    features.train()
    assert not features.network.training and all(not p.requires_grad for p in features.parameters())
    out = features(torch.randn(2, 1, 8, 8))
    assert set(out) == {"4"} and out["4"].shape == (2, 12, 4, 4) and not out["4"].requires_grad


def test_a_method_is_named_by_its_parts(teacher) -> None:
    def describe(method: Method) -> str:
        return checkpoints.describe_callable(method)

    student = cnn(4, seed=0)
    mild, strong = NuclearPenalty(HintonKD(4.0, 0.5), student, 0.1), NuclearPenalty(HintonKD(4.0, 0.9), student, 0.1)
    assert "base=HintonKD(temperature=4.0, alpha=0.5)" in describe(mild) and describe(mild) != describe(strong)
    assert describe(fitnets(teacher)) == describe(fitnets(teacher))
    assert describe(fitnets(teacher)) != describe(fitnets(teacher, seed=3))  # another initial regressor
    assert describe(fitnets(teacher)) != describe(fitnets(cnn(6, seed=5)))  # another teacher
    assert len(describe(fitnets(teacher))) < 400  # the teacher network by a digest


# ------------------------------------------------------------------ FitNets


def test_fitnets_loss_matches_a_hand_computation() -> None:
    regressor = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        regressor.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    teacher = nn.Sequential(nn.Identity())  # the guided layer outputs the inputs
    hint, guided = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 1.0]])  # r(hint) = (2, 2): squared errors 1, 1
    method = FitNets(teacher, "s", "0", regressor, weight=0.5)
    assert method.student_features == ("s",)
    outputs, targets = torch.zeros(1, 2), torch.tensor([0])
    torch.testing.assert_close(method(outputs, targets, inputs=guided, features={"s": hint}), torch.tensor(0.5))
    combined = FitNets(teacher, "s", "0", regressor, weight=0.5, base=CrossEntropy())
    torch.testing.assert_close(combined(outputs, targets, inputs=guided, features={"s": hint}), torch.tensor(0.5 + math.log(2)))
    with pytest.raises(ValueError, match="shape"):
        method(outputs, targets, inputs=torch.ones(1, 3), features={"s": hint})


def test_fitnets_gradients_reach_the_student_and_the_regressor_only(teacher) -> None:
    student, method = cnn(4, seed=0), fitnets(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with capture(student, method.student_features) as features:
        x = torch.randn(4, 1, 8, 8)
        method(student(x), torch.tensor([0, 1, 2, 0]), inputs=x, features=features).backward()
    assert all(p.grad is not None for p in student[:3].parameters())  # up to the hint layer
    assert all(p.grad is None for p in student[3:].parameters())  # hints only: the layers above learn nothing
    assert all(p.grad is not None for p in method.regressor.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


# ------------------------------------------------------------------ attention transfer


def test_attention_map_and_loss_match_a_hand_computation() -> None:
    activation = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): channel mean of A² = (5, 2)
    torch.testing.assert_close(attention_map(activation), torch.tensor([[5.0, 2.0]]) / math.sqrt(29))
    teacher = nn.Sequential(nn.Identity())
    method = AttentionTransfer(teacher, [("s", "0")], beta=10.0)
    outputs, targets = torch.zeros(1, 2), torch.tensor([0])
    value = method(outputs, targets, inputs=torch.ones(1, 3, 1, 2), features={"s": activation})  # teacher map (1, 1)/√2
    distance = ((5 / math.sqrt(29) - 1 / math.sqrt(2)) ** 2 + (2 / math.sqrt(29) - 1 / math.sqrt(2)) ** 2) / 2
    torch.testing.assert_close(value, torch.tensor(math.log(2) + 10.0 / 2 * distance))
    with pytest.raises(ValueError, match="layer pair"):
        AttentionTransfer(teacher, [], beta=1.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        attention_map(torch.ones(2, 3))
    with pytest.raises(ValueError, match="same H and W"):
        method(outputs, targets, inputs=torch.ones(1, 3, 2, 2), features={"s": activation})


def test_attention_transfer_adds_to_kd_and_leaves_the_teacher_alone(teacher) -> None:
    student = cnn(4, seed=0)
    method = AttentionTransfer(teacher, [("1", "1")], beta=100.0, base=HintonKD(2.0, 0.5))
    x, y, soft = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3)
    with capture(student, method.student_features) as features:
        outputs = student(x)
        loss = method(outputs, y, soft, inputs=x, features=features)
    with torch.no_grad():
        expected = distillation_loss(outputs, soft, y, 2.0, 0.5) + 50.0 * (
            attention_map(features["1"]) - attention_map(teacher[1](teacher[0](x)))).pow(2).mean()
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


# ------------------------------------------------------------------ real runs

_INTERRUPT = {"batches": 0, "at": None}  # a module global: no part of the run's identity


class InterruptedBatches:
    """Batches that raise ``KeyboardInterrupt`` at batch number ``_INTERRUPT["at"]`` (counted over epochs)."""

    def __init__(self, batches: TensorBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def fingerprint(self) -> str:
        return self.batches.fingerprint()

    def __iter__(self):
        for batch in self.batches:
            _INTERRUPT["batches"] += 1
            if _INTERRUPT["batches"] == _INTERRUPT["at"]:
                raise KeyboardInterrupt
            yield batch


@pytest.mark.parametrize("kind", ["fitnets", "fitnets+kd", "attention"])
def test_a_feature_method_trains_a_cnn_and_resumes_exactly(images, teacher, kind: str, tmp_path: Path) -> None:
    x, y = images
    soft = teacher(x).detach()

    def method() -> Method:
        if kind == "fitnets":
            return fitnets(teacher)
        if kind == "fitnets+kd":
            return fitnets(teacher, base=HintonKD(2.0, 0.5))
        return attention(teacher)

    batches = InterruptedBatches(TensorBatches(x, y, soft, batch_size=16, seed=3))
    kwargs = dict(epochs=3, val_data=(x[:32], y[:32]), lr=1e-2, schedule="cosine", restore_best=False, seed=4, progress=False)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}

    reference, reference_method = cnn(4, seed=0), method()
    regressor_before = {k: v.clone() for k, v in reference_method.state_dict().items() if k.startswith("regressor")}
    _INTERRUPT.update(batches=0, at=None)
    result = fit(reference, batches, reference_method, **kwargs)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(not torch.equal(v, reference_method.state_dict()[k]) for k, v in regressor_before.items())
    assert bool(regressor_before) == kind.startswith("fitnets")
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())

    checkpoint = tmp_path / "run.ckpt"
    _INTERRUPT.update(batches=0, at=len(batches) + 2)  # in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(cnn(4, seed=0), batches, method(), checkpoint=checkpoint, **kwargs)
    _INTERRUPT.update(batches=0, at=None)
    resumed, resumed_method = cnn(4, seed=0), method()
    resumed_result = fit(resumed, batches, resumed_method, checkpoint=checkpoint, **kwargs)
    for mine, theirs in ((resumed, reference), (resumed_method, reference_method)):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), key
    assert [h["train_loss"] for h in resumed_result.history] == [h["train_loss"] for h in result.history]


def test_the_nuclear_penalty_keeps_its_lazy_schedule_across_a_resume() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    method = NuclearPenalty(CrossEntropy(), model, beta=0.1, every=3)
    logits, y = torch.randn(2, 3), torch.tensor([0, 1])
    for _ in range(4):
        method(logits, y)
    again = NuclearPenalty(CrossEntropy(), model, beta=0.1, every=3)
    again.load_state_dict(method.state_dict())
    assert again.calls == 4
    torch.testing.assert_close(again(logits, y), F.cross_entropy(logits, y))  # call 4: not due
