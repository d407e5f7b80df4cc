"""Tests of kdcourse.kd.takd and kdcourse.kd.eskd: teacher-assistant chains and per-epoch teacher snapshots."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from kdcourse.kd import takd
from kdcourse.kd.eskd import TeacherSnapshots, train_with_snapshots
from kdcourse.kd.takd import distill_chain
from kdcourse.data import TensorBatches
from kdcourse.kd.teachers import teacher_logits
from kdcourse.kd.hinton import distillation_loss
from kdcourse.models import mlp
from kdcourse.train import FitResult, fit, predict_logits

SETTINGS = {"temperature": 4.0, "alpha": 0.7, "epochs": 2, "batch_size": 50, "lr": 1e-3, "seed": 3}
PROJECTION = torch.randn(784, 10, generator=torch.Generator().manual_seed(99))


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 1×28×28 images labelled by a fixed linear rule (learnable by an MLP)."""
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return x, (x.flatten(1) @ PROJECTION).argmax(1)


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": images(200, 0), "val": images(100, 1)}


def net(seed: int, hidden: int = 32) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp([hidden])


@pytest.fixture(scope="module")
def teacher(data) -> nn.Sequential:
    model = net(0, hidden=64)
    fit(model, TensorBatches(*data["train"], batch_size=50), epochs=3, lr=3e-3, progress=False)
    return model.eval()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def direct_kd(student: nn.Module, soft: torch.Tensor, data, **fit_kwargs) -> FitResult:
    """Plain KD of ``student`` on the logits ``soft``, written out with fit and distillation_loss."""
    T, alpha = SETTINGS["temperature"], SETTINGS["alpha"]
    batches = TensorBatches(*data["train"], soft, batch_size=SETTINGS["batch_size"], seed=SETTINGS["seed"])
    return fit(
        student,
        batches,
        lambda s, y, t: distillation_loss(s, t, y, T, alpha),
        epochs=SETTINGS["epochs"],
        val_data=data["val"],
        lr=SETTINGS["lr"],
        seed=SETTINGS["seed"],
        progress=False,
        **fit_kwargs,
    )


# ---------------------------------------------------------------- distill_chain


def test_chain_of_two_is_plain_distillation(data, teacher) -> None:
    chained, direct = net(1), net(1)
    results = distill_chain([teacher, chained], data["train"], data["val"], progress=False, **SETTINGS)
    expected = direct_kd(direct, teacher_logits(teacher, data["train"][0]), data)
    assert len(results) == 1 and isinstance(results[0], FitResult)
    assert_same_weights(chained.state_dict(), direct.state_dict())
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert strip(results[0].history) == strip(expected.history)


def test_chain_with_an_assistant_distils_from_the_trained_assistant(data, teacher, monkeypatch) -> None:
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def counting_teacher_logits(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
        logits = teacher_logits(model, x, **kwargs)
        calls.append((model, logits))
        return logits

    monkeypatch.setattr(takd, "teacher_logits", counting_teacher_logits)
    assistant, student = net(1, hidden=48), net(2)
    assistant_start = copy.deepcopy(assistant.state_dict())
    results = distill_chain([teacher, assistant, student], data["train"], data["val"], progress=False, **SETTINGS)

    assert len(results) == 2 and all(len(r.history) == SETTINGS["epochs"] for r in results)
    assert [model for model, _ in calls] == [teacher, assistant]
    assert not torch.equal(assistant.state_dict()["1.weight"], assistant_start["1.weight"])  # trained first
    torch.testing.assert_close(calls[1][1], predict_logits(assistant, data["train"][0]), rtol=0, atol=0)
    # the student is exactly plain KD from the trained assistant
    reference = net(2)
    direct_kd(reference, calls[1][1], data)
    assert_same_weights(student.state_dict(), reference.state_dict())


def test_chain_checkpoints_resume_and_cache(data, teacher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = [teacher, net(1, hidden=48), net(2)]
    distill_chain(first, data["train"], data["val"], progress=False, checkpoint_dir=tmp_path, **SETTINGS)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt") == [
        "link1.pt", "link1_teacher_logits.pt", "link2.pt", "link2_teacher_logits.pt"
    ]

    def must_not_train(*_: object, **__: object) -> None:
        raise AssertionError("finished links are restored from their checkpoints, not trained again")

    monkeypatch.setattr(torch.optim.AdamW, "step", must_not_train)
    again = [teacher, net(1, hidden=48), net(2)]
    distill_chain(again, data["train"], data["val"], progress=False, checkpoint_dir=tmp_path, **SETTINGS)
    for a, b in zip(first[1:], again[1:]):
        assert_same_weights(a.state_dict(), b.state_dict())


def test_chain_rejects_bad_arguments(data, teacher) -> None:
    with pytest.raises(ValueError, match="at least one model"):
        distill_chain([teacher], data["train"], data["val"], **SETTINGS)
    with pytest.raises(ValueError, match="alpha"):
        distill_chain([teacher, net(1)], data["train"], data["val"], **{**SETTINGS, "alpha": 1.5})
    with pytest.raises(ValueError, match="checkpoint_dir"):
        distill_chain([teacher, net(1)], data["train"], data["val"], checkpoint="x.pt", **SETTINGS)


# ---------------------------------------------------------------- snapshots


def test_snapshot_after_epoch_e_equals_a_run_of_e_epochs(data, tmp_path: Path) -> None:
    epochs = 3
    batches = TensorBatches(*data["train"], batch_size=40, seed=5)
    model = net(4)
    snapshots = train_with_snapshots(
        model, batches, epochs=epochs, snapshot_dir=tmp_path / "snaps", val_data=data["val"], lr=3e-3, seed=5,
        progress=False,
    )
    assert isinstance(snapshots, TeacherSnapshots) and len(snapshots) == epochs
    assert [p.name for p in snapshots.paths] == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    assert len(snapshots.result.history) == epochs
    for e in range(1, epochs + 1):
        reference = net(4)
        fit(reference, TensorBatches(*data["train"], batch_size=40, seed=5), epochs=e, val_data=data["val"],
            lr=3e-3, seed=5, restore_best=False, progress=False)
        assert_same_weights(torch.load(snapshots.paths[e - 1], weights_only=True), reference.state_dict())
        loaded = snapshots.load(net(9), e)
        assert_same_weights(loaded.state_dict(), reference.state_dict())
    with pytest.raises(ValueError, match="epoch"):
        snapshots.load(net(9), epochs + 1)


class Interrupted(RuntimeError):
    pass


class InterruptedBatches(TensorBatches):
    """Batches that fail at the start of epoch ``stop`` (0-based), like a run killed mid-training."""

    def __init__(self, *tensors: torch.Tensor, stop: int, **kwargs) -> None:
        super().__init__(*tensors, **kwargs)
        self.stop = stop

    def __iter__(self):
        if self.epoch == self.stop:
            raise Interrupted
        return super().__iter__()


def test_snapshots_resume_from_a_checkpoint(data, tmp_path: Path) -> None:
    kwargs = {"epochs": 3, "lr": 3e-3, "progress": False}
    with pytest.raises(Interrupted):
        train_with_snapshots(net(4), InterruptedBatches(*data["train"], batch_size=40, stop=1),
                             snapshot_dir=tmp_path / "snaps", checkpoint=tmp_path / "teacher.pt", **kwargs)
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == ["epoch_001.pt"]
    resumed = train_with_snapshots(net(4), TensorBatches(*data["train"], batch_size=40),  # weights from the checkpoint
                                   snapshot_dir=tmp_path / "snaps", checkpoint=tmp_path / "teacher.pt", **kwargs)
    fresh = train_with_snapshots(net(4), TensorBatches(*data["train"], batch_size=40), snapshot_dir=tmp_path / "fresh", **kwargs)
    assert len(resumed) == len(fresh) == 3
    for a, b in zip(resumed.paths, fresh.paths):
        assert_same_weights(torch.load(a, weights_only=True), torch.load(b, weights_only=True))
    again = train_with_snapshots(net(4), TensorBatches(*data["train"], batch_size=40),  # finished: nothing to train
                                 snapshot_dir=tmp_path / "snaps", checkpoint=tmp_path / "teacher.pt", **kwargs)
    assert again.paths == resumed.paths


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_snapshots_need_a_constant_schedule(data, tmp_path: Path, schedule: str) -> None:
    with pytest.raises(ValueError, match="constant"):
        train_with_snapshots(net(0), TensorBatches(*data["train"]), epochs=2, snapshot_dir=tmp_path, schedule=schedule)
