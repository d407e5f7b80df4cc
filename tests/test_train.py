"""Tests of kdcourse.train: the training loop, model selection, early stopping and resuming."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcourse import checkpoints
from kdcourse.data import TensorBatches
from kdcourse.train import FitResult, evaluate, fit, predict_logits

CENTRES = torch.randn(4, 8, generator=torch.Generator().manual_seed(100)) * 3


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four well separated Gaussian classes in 8 dimensions."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=generator)
    return CENTRES[y] + torch.randn(n, 8, generator=generator), y


def small_net(seed: int = 0, dropout: float = 0.3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 4))


@pytest.fixture(scope="module")
def problem() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": blobs(256, 0), "val": blobs(128, 1)}


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_fit_learns_a_separable_problem(problem) -> None:
    x, y = problem["train"]
    model = small_net()
    before = evaluate(model, *problem["val"])
    result = fit(model, TensorBatches(x, y, batch_size=32), epochs=4, val_data=problem["val"], lr=1e-2, progress=False)
    after = evaluate(model, *problem["val"])
    assert isinstance(result, FitResult)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert after["loss"] < before["loss"]
    assert after["accuracy"] >= 0.95
    assert result.finished and not result.stopped_early
    assert result.train_seconds == pytest.approx(sum(h["seconds"] for h in result.history))
    assert all({"train_loss", "val_loss", "val_accuracy", "lr", "seconds"} <= set(h) for h in result.history)


def test_fit_without_validation_uses_the_last_epoch(problem) -> None:
    x, y = problem["train"]
    model = small_net()
    result = fit(model, TensorBatches(x, y, batch_size=64), epochs=2, lr=1e-2, progress=False)
    assert result.best_epoch == 2
    assert "val_accuracy" not in result.history[-1]


def test_fit_passes_batch_extras_to_the_loss(problem) -> None:
    x, y = problem["train"]
    extra = torch.arange(len(y)).float()
    seen = []

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        seen.append(index)
        assert torch.equal(y[index.long()], targets)
        return F.cross_entropy(logits, targets)

    fit(small_net(), TensorBatches(x, y, extra, batch_size=64), loss_fn, epochs=1, progress=False)
    assert sorted(torch.cat(seen).long().tolist()) == list(range(len(y)))


# when the loss below raises: a module global, so that it is no part of the loss's identity
_INTERRUPT = {"calls": 0, "at": None}


def test_interrupted_run_resumes_to_bitwise_identical_weights(problem, tmp_path: Path) -> None:
    x, y = problem["train"]
    batches = TensorBatches(x, y, batch_size=32, seed=7)
    steps_per_epoch = len(batches)
    kwargs = dict(epochs=3, val_data=problem["val"], lr=5e-3, schedule="cosine", restore_best=False, seed=11, progress=False)

    reference = small_net()
    reference_result = fit(reference, batches, **kwargs)

    def interrupting_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _INTERRUPT["calls"] += 1
        if _INTERRUPT["calls"] == _INTERRUPT["at"]:
            raise KeyboardInterrupt
        return F.cross_entropy(logits, targets)

    checkpoint = tmp_path / "run" / "model.ckpt"
    _INTERRUPT.update(calls=0, at=steps_per_epoch + 3)  # in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(small_net(), batches, interrupting_loss, checkpoint=checkpoint, **kwargs)
    assert checkpoint.is_file()
    assert len(torch.load(checkpoint, weights_only=False)["result"]["history"]) == 1

    torch.rand(5)  # the global RNG moved on in between: the checkpoint must restore it
    resumed = small_net()
    _INTERRUPT.update(calls=0, at=None)
    resumed_result = fit(resumed, batches, interrupting_loss, checkpoint=checkpoint, **kwargs)
    assert_same_weights(resumed, reference)
    assert without_seconds(resumed_result.history) == without_seconds(reference_result.history)
    assert resumed_result.best_epoch == reference_result.best_epoch
    assert resumed_result.finished


def test_resuming_without_the_rng_state_would_differ(problem, tmp_path: Path) -> None:
    """Guards the test above: with dropout the run depends on the RNG, so restoring it matters."""
    x, y = problem["train"]
    batches = TensorBatches(x, y, batch_size=32, seed=7)
    first, second = small_net(), small_net()
    fit(first, batches, epochs=1, lr=5e-3, seed=1, progress=False)
    fit(second, batches, epochs=1, lr=5e-3, seed=2, progress=False)
    assert not torch.equal(first[0].weight, second[0].weight)


def test_finished_checkpoint_returns_without_training(problem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = problem["train"]
    batches = TensorBatches(x, y, batch_size=32)
    checkpoint = tmp_path / "done.ckpt"
    model = small_net()
    result = fit(model, batches, epochs=2, val_data=problem["val"], lr=5e-3, checkpoint=checkpoint, progress=False)

    def must_not_train(*_: object, **__: object) -> None:
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(torch.optim.AdamW, "step", must_not_train)
    again = small_net()
    again_result = fit(again, batches, epochs=2, val_data=problem["val"], lr=5e-3, checkpoint=checkpoint, progress=False)
    assert again_result.history == result.history
    assert again_result.best_epoch == result.best_epoch
    assert again_result.best_val_score == result.best_val_score
    assert_same_weights(again, model)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"epochs": 3}, "epochs"),
        ({"lr": 1e-3}, "lr"),
        ({"schedule": "cosine"}, "schedule"),
        ({"seed": 1}, "seed"),
        ({"init_seed": 5}, "initial weights"),
        ({"loss": lambda logits, targets: F.cross_entropy(logits, targets, label_smoothing=0.1)}, "loss"),
        ({"data_seed": 8}, "training data"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(problem, tmp_path: Path, change: dict, named: str) -> None:
    """Every argument that shapes the run is part of its identity; a changed one names itself."""
    x, y = problem["train"]
    checkpoint = tmp_path / "run.ckpt"

    def run(epochs: int = 2, lr: float = 5e-3, schedule: str = "constant", seed: int = 0, init_seed: int = 0,
            loss=None, data_seed: int = 7) -> None:
        fit(small_net(init_seed), TensorBatches(x, y, batch_size=32, seed=data_seed), loss, epochs=epochs, lr=lr,
            schedule=schedule, seed=seed, val_data=problem["val"], checkpoint=checkpoint, progress=False)

    run()
    run()  # the same run: returned from its checkpoint
    with pytest.raises(checkpoints.RunMismatchError, match=rf"{re.escape(str(checkpoint))} holds another run.*{named}"):
        run(**change)


def test_a_corrupt_checkpoint_names_the_file(problem, tmp_path: Path) -> None:
    x, y = problem["train"]
    checkpoint = tmp_path / "run.ckpt"
    fit(small_net(), TensorBatches(x, y, batch_size=32), epochs=1, checkpoint=checkpoint, progress=False)
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])  # truncated, as by a full disk
    with pytest.raises(checkpoints.CorruptCheckpointError, match=rf"{re.escape(str(checkpoint))} cannot be read.*Delete it"):
        fit(small_net(), TensorBatches(x, y, batch_size=32), epochs=1, checkpoint=checkpoint, progress=False)


def test_a_second_process_waits_for_the_run_that_holds_the_checkpoint(
    problem, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Another process holds the run's lock for two seconds: fit says so, waits, then trains."""
    x, y = problem["train"]
    checkpoint = tmp_path / "run.ckpt"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from kdcourse.checkpoints import RunLock\n"
        f"with RunLock({str(checkpoint)!r}):\n    print('locked', flush=True); time.sleep(2)"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    start = time.perf_counter()
    result = fit(small_net(), TensorBatches(x, y, batch_size=32), epochs=1, checkpoint=checkpoint, progress=False)
    assert holder.wait(timeout=30) == 0
    assert time.perf_counter() - start > 1.0 and result.finished
    assert re.search(rf"pid {holder.pid}\) is training into {re.escape(str(checkpoint))}: waiting", capfd.readouterr().err)


def test_early_stopping_stops_when_validation_does_not_improve(problem) -> None:
    x, y = problem["train"]
    model = small_net(dropout=0.0)
    # a negligible learning rate: the predictions, hence the validation accuracy, never change
    result = fit(
        model, TensorBatches(x, y, batch_size=64), epochs=10, val_data=problem["val"], lr=1e-12,
        early_stopping_patience=2, progress=False,
    )
    assert len(result.history) == 3
    assert result.stopped_early and result.finished
    assert result.best_epoch == 1
    assert len({h["val_accuracy"] for h in result.history}) == 1


def test_early_stopping_waits_while_validation_improves(problem) -> None:
    x, y = problem["train"]
    result = fit(
        small_net(), TensorBatches(x, y, batch_size=64), epochs=3, val_data=problem["val"], lr=1e-2,
        early_stopping_patience=5, progress=False,
    )
    assert len(result.history) == 3 and not result.stopped_early


def test_fit_restores_the_weights_of_the_best_validation_epoch(problem) -> None:
    x, y = problem["train"]
    x_val, y_val = problem["val"]
    flipped = (y_val + 1) % 4  # validation labels the training drives the model away from
    batches = TensorBatches(x, y, batch_size=32)
    model = small_net()
    result = fit(model, batches, epochs=4, val_data=(x_val, flipped), lr=3e-3, progress=False)
    accuracies = [h["val_accuracy"] for h in result.history]
    assert result.best_val_score == max(accuracies)
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1
    assert result.best_epoch < len(accuracies)  # otherwise restoring would not be tested
    assert evaluate(model, x_val, flipped)["accuracy"] == result.best_val_score

    # the restored weights are exactly those after the best epoch
    stopped_there = small_net()
    fit(stopped_there, batches, epochs=result.best_epoch, val_data=(x_val, flipped), lr=3e-3, progress=False)
    assert_same_weights(model, stopped_there)

    last = small_net()
    fit(last, batches, epochs=4, val_data=(x_val, flipped), lr=3e-3, restore_best=False, progress=False)
    assert evaluate(last, x_val, flipped)["accuracy"] == accuracies[-1] != result.best_val_score


@pytest.mark.parametrize(("schedule", "final_below"), [("cosine", 1e-8), ("onecycle", 1e-3)])
def test_schedules_anneal_the_learning_rate(problem, schedule: str, final_below: float) -> None:
    x, y = problem["train"]
    result = fit(small_net(), TensorBatches(x, y, batch_size=64), epochs=2, lr=1e-2, schedule=schedule, progress=False)
    # the recorded lr is the optimiser's after the epoch's last step (for onecycle one step past the end)
    assert result.history[-1]["lr"] < final_below
    assert result.history[0]["lr"] > result.history[-1]["lr"]


def test_constant_schedule_keeps_the_learning_rate(problem) -> None:
    x, y = problem["train"]
    result = fit(small_net(), TensorBatches(x, y, batch_size=64), epochs=2, lr=1e-2, progress=False)
    assert [h["lr"] for h in result.history] == [1e-2, 1e-2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"epochs": 2, "schedule": "linear"},
        {"epochs": 2, "early_stopping_patience": 2},  # no val_data
        {"epochs": 2, "early_stopping_patience": 0, "val_data": blobs(8, 3)},
        {"epochs": 2, "lr": 0.0},
    ],
)
def test_fit_rejects_bad_arguments(problem, kwargs: dict) -> None:
    x, y = problem["train"]
    with pytest.raises(ValueError):
        fit(small_net(), TensorBatches(x, y, batch_size=64), progress=False, **kwargs)


def test_predict_logits_and_evaluate(problem) -> None:
    x, y = problem["val"]
    model = small_net().train()
    logits = predict_logits(model, x, batch_size=50)
    assert logits.shape == (128, 4) and logits.dtype == torch.float32
    assert model.training  # the mode is restored
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(logits, expected)
    from_batches = predict_logits(model, TensorBatches(x, y, batch_size=30, shuffle=False))
    torch.testing.assert_close(from_batches, expected)
    scores = evaluate(model, x, y)
    assert scores["loss"] == pytest.approx(F.cross_entropy(expected, y).item(), rel=1e-5)
    assert scores["accuracy"] == pytest.approx((expected.argmax(1) == y).float().mean().item())


def test_evaluate_scores_mapped_class_logits() -> None:
    # a model with 2 × 2 subclass outputs; its class logits come from log-sum-exp over each pair
    from kdcourse.kd.subclass import class_logits_from_subclasses

    model = nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 5.0, 0]]))
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    y = torch.tensor([0, 1, 1])  # class 0 owns outputs 0–1, class 1 outputs 2–3
    mapped = evaluate(model, x, y, class_logits=lambda out: class_logits_from_subclasses(out, 2))
    assert mapped["accuracy"] == pytest.approx(2 / 3)
    # without the map, targets would be read as subclass indices: only the first example matches
    assert evaluate(model, x, y)["accuracy"] == pytest.approx(1 / 3)


def test_fit_selects_epochs_on_mapped_validation_accuracy(tmp_path: Path) -> None:
    from kdcourse.kd.subclass import class_logits_from_subclasses

    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(5, 6)  # 2 classes × 3 subclasses
    to_classes = lambda out: class_logits_from_subclasses(out, 3)  # noqa: E731
    result = fit(model, TensorBatches(x, y, batch_size=16, seed=0), lambda out, t: F.cross_entropy(to_classes(out), t), epochs=3,
                 val_data=(x, y), lr=0.05, class_logits=to_classes, checkpoint=tmp_path / "run.ckpt")
    best = max(h["val_accuracy"] for h in result.history)
    assert result.best_val_score == pytest.approx(best)
    assert evaluate(model, x, y, class_logits=to_classes)["accuracy"] == pytest.approx(best)


def test_sgd_with_momentum_trains(problem) -> None:
    x, y = problem["train"]
    model = small_net(dropout=0.0)
    result = fit(model, TensorBatches(x, y, batch_size=32), epochs=3, val_data=problem["val"], lr=0.05,
                 optimizer="sgd", momentum=0.9, weight_decay=5e-4, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] and result.best_val_score > 0.9


def test_the_plateau_schedule_cuts_the_rate_when_validation_stalls(problem) -> None:
    x, y = problem["train"]
    # a negligible learning rate (yet above ReduceLROnPlateau's eps of 1e-8): validation never improves
    result = fit(small_net(dropout=0.0), TensorBatches(x, y, batch_size=64), epochs=6, val_data=problem["val"], lr=1e-6,
                 optimizer="sgd", schedule="plateau", plateau_patience=1, progress=False)
    rates = [h["lr"] for h in result.history]
    assert len({h["val_accuracy"] for h in result.history}) == 1
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1e-8)  # cut twice by 10


@pytest.mark.parametrize(
    "kwargs, message",
    [({"schedule": "plateau"}, "plateau schedule needs val_data"), ({"optimizer": "lion"}, "optimizer must be one of"),
     ({"optimizer": "sgd", "momentum": 1.0}, "momentum must lie")],
)
def test_bad_optimiser_settings_are_refused(problem, kwargs: dict, message: str) -> None:
    x, y = problem["train"]
    with pytest.raises(ValueError, match=message):
        fit(small_net(), TensorBatches(x, y), epochs=1, progress=False, **kwargs)


def test_an_sgd_plateau_run_resumes_to_the_same_weights(problem, tmp_path: Path) -> None:
    """The plateau scheduler and SGD's momentum buffers travel in the checkpoint too."""
    x, y = problem["train"]
    kwargs = dict(epochs=4, val_data=problem["val"], lr=0.05, optimizer="sgd", schedule="plateau", plateau_patience=0,
                  restore_best=False, seed=3, progress=False)
    reference = small_net()
    fit(reference, TensorBatches(x, y, batch_size=32, seed=1), **kwargs)
    checkpoint = tmp_path / "sgd.ckpt"
    _INTERRUPT.update(calls=0, at=len(TensorBatches(x, y, batch_size=32)) * 2 + 1)  # early in epoch 3

    def interrupting_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _INTERRUPT["calls"] += 1
        if _INTERRUPT["calls"] == _INTERRUPT["at"]:
            raise KeyboardInterrupt
        return F.cross_entropy(logits, targets)

    with pytest.raises(KeyboardInterrupt):
        fit(small_net(), TensorBatches(x, y, batch_size=32, seed=1), interrupting_loss, checkpoint=checkpoint, **kwargs)
    _INTERRUPT.update(calls=0, at=None)
    resumed = small_net()
    fit(resumed, TensorBatches(x, y, batch_size=32, seed=1), interrupting_loss, checkpoint=checkpoint, **kwargs)
    assert_same_weights(resumed, reference)


@pytest.mark.parametrize(
    "other",
    [
        lambda: nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.3), nn.Linear(32, 4)),  # another activation
        lambda: nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4)),  # another dropout rate
    ],
    ids=["activation", "dropout"],
)
def test_a_network_of_the_same_shapes_but_another_structure_is_another_run(problem, tmp_path: Path, other) -> None:
    """Parameter names and shapes do not say which activation or dropout rate a network has; its identity must."""
    x, y = problem["train"]
    checkpoint = tmp_path / "run.ckpt"
    kwargs = dict(epochs=1, lr=5e-3, checkpoint=checkpoint, progress=False)
    fit(small_net(), TensorBatches(x, y, batch_size=32), **kwargs)
    torch.manual_seed(0)  # the same initial weights as small_net(): only the structure differs
    model = other()
    assert_same_weights(model, small_net())
    with pytest.raises(checkpoints.RunMismatchError, match=r"holds another run.*model"):
        fit(model, TensorBatches(x, y, batch_size=32), **kwargs)


# read by the loss below at call time: a module-level setting that is part of the loss's identity
_SMOOTHING = 0.0


def _globally_smoothed_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=_SMOOTHING)


def test_a_loss_reading_a_changed_module_global_is_another_run(problem, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = problem["train"]
    checkpoint = tmp_path / "run.ckpt"
    kwargs = dict(epochs=1, lr=5e-3, checkpoint=checkpoint, progress=False)
    fit(small_net(), TensorBatches(x, y, batch_size=32), _globally_smoothed_loss, **kwargs)
    fit(small_net(), TensorBatches(x, y, batch_size=32), _globally_smoothed_loss, **kwargs)  # unchanged: the same run
    monkeypatch.setitem(globals(), "_SMOOTHING", 0.1)
    with pytest.raises(checkpoints.RunMismatchError, match=r"holds another run.*loss"):
        fit(small_net(), TensorBatches(x, y, batch_size=32), _globally_smoothed_loss, **kwargs)


def test_a_resume_on_another_thread_count_is_recorded_and_warned(problem, tmp_path: Path) -> None:
    """Bitwise resumption assumes the thread count of the interrupted session: each session records
    its own, and a resume on another count says so."""
    x, y = problem["train"]
    checkpoint = tmp_path / "run.ckpt"
    kwargs = dict(epochs=3, lr=5e-3, seed=2, checkpoint=checkpoint, progress=False)

    def interrupting_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _INTERRUPT["calls"] += 1
        if _INTERRUPT["calls"] == _INTERRUPT["at"]:
            raise KeyboardInterrupt
        return F.cross_entropy(logits, targets)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for stop in (9, 10):  # early in epoch 2, then (8 steps an epoch, counted from the resumed epoch 2) in epoch 3
            _INTERRUPT.update(calls=0, at=stop)
            with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
                warnings.simplefilter("error")  # the same thread count: no warning
                fit(small_net(), TensorBatches(x, y, batch_size=32), interrupting_loss, **kwargs)
        torch.set_num_threads(2)
        _INTERRUPT.update(calls=0, at=None)
        with pytest.warns(RuntimeWarning, match=r"trained with 1 CPU threads on 2 threads.*set_num_threads\(1\)"):
            result = fit(small_net(), TensorBatches(x, y, batch_size=32), interrupting_loss, **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert [(s["threads"], s["epochs"]) for s in result.sessions] == [(1, 1), (1, 1), (2, 1)]
