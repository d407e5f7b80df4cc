"""Training and evaluation loops for any model and any loss.

``fit`` trains on an iterable of batches ``(inputs, targets, *extras)`` and calls
``loss_fn(logits, targets, *extras)``; extras carry, for example, cached teacher logits. It
validates every epoch, keeps the weights of the best validation epoch (model selection never
looks at the test set), can stop early, follows a learning-rate schedule and writes a checkpoint
after every epoch so that an interrupted run resumes where it stopped. The checkpoint names the run
(:func:`run_identity`): a checkpoint of another run is refused rather than resumed, and one process
at a time trains into it (:class:`kdcourse.checkpoints.RunLock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse import checkpoints, provenance

from kdcourse.metrics import roc_auc

__all__ = ["FitResult", "fit", "evaluate", "predict_logits", "progress_enabled", "run_identity", "METRICS"]

LossFn = Callable[..., Tensor]
OutputMap = Callable[[Tensor], Tensor]  # model outputs (N, K) → class logits (N, C)
Metric = Callable[[Tensor, Tensor], float]  # (class logits (N, C), labels (N,)) → score, higher is better
SCHEDULES = ("constant", "cosine", "onecycle", "plateau")
OPTIMIZERS = ("adamw", "sgd")
PLATEAU_FACTOR = 0.1  # "plateau": the learning rate is multiplied by this when validation stalls


def _accuracy(logits: Tensor, targets: Tensor) -> float:
    return (logits.argmax(-1) == targets).float().mean().item()


# validation metrics that ``fit`` can select the best epoch on, by name
METRICS: dict[str, Metric] = {"accuracy": _accuracy, "auc": roc_auc}


def progress_enabled() -> bool:
    """Progress bars are on unless ``KDCOURSE_PROGRESS=0`` (book builds set it)."""
    return os.environ.get("KDCOURSE_PROGRESS", "1") != "0"


def _autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: Tensor | Iterable,
    *,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Logits ``(N, C)`` (float32, on the CPU) of ``model`` in eval mode (``(G, N, C)`` for a stacked model).

    ``data`` is an input tensor ``(N, ...)`` or an iterable of batches whose first element is the input.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    batches = (data[i : i + batch_size] for i in range(0, len(data), batch_size)) if isinstance(data, Tensor) else (
        b[0] if isinstance(b, (tuple, list)) else b for b in data
    )
    outputs = []
    with _autocast(amp_dtype, device):
        for x in batches:
            outputs.append(model(x.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs, dim=-2)


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    class_logits: OutputMap | None = None,
    metric: str = "accuracy",
) -> dict[str, float | list[float]]:
    """Cross-entropy (nats per sample), accuracy (fraction in [0, 1]) and ``metric`` (a name in
    :data:`METRICS`, e.g. ``"auc"``) of ``model`` on ``(x, y)``.

    ``x`` is an input tensor or an iterable of batches (see :func:`predict_logits`). For a stacked
    model returning ``(G, N, C)`` logits (see :class:`kdcourse.kd.stacked.StackedMLP`) the values are
    lists with one entry per member. ``class_logits`` maps the model's outputs to the class logits
    that ``y`` refers to (e.g. log-sum-exp over subclasses); default: identity.
    """
    score = _metric(metric)
    logits = predict_logits(model, x, batch_size=batch_size, device=device, amp_dtype=amp_dtype)
    if class_logits is not None:
        logits = class_logits(logits)
    members = list(logits) if logits.dim() == 3 else [logits]
    values = {
        "loss": [F.cross_entropy(member, y).item() for member in members],
        "accuracy": [_accuracy(member, y) for member in members],
        metric: [score(member, y) for member in members],
    }
    return {name: v if logits.dim() == 3 else v[0] for name, v in values.items()}


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"unknown validation metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[name]


@dataclass
class FitResult:
    """What ``fit`` returns and stores in its checkpoint.

    ``history`` has one dict per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss``,
    ``val_accuracy`` (and ``val_<metric>`` when the selection metric is not accuracy), ``lr`` and
    ``seconds`` (wall time of the epoch). ``metric`` names the validation metric the best epoch was
    selected on and ``best_val_score`` is its best value. For a stacked model the validation values,
    ``best_epoch`` and ``best_val_score`` are lists with one entry per member.
    ``sessions`` has one dict per process that trained epochs of the run: ``commit`` (see
    :func:`kdcourse.provenance.code_commit`), ``device``, ``started``/``ended`` (UTC), ``epochs`` and
    ``seconds``, so that a resumed run still names the code that trained it.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int | list[int] = 0
    best_val_score: float | list[float] = -math.inf
    metric: str = "accuracy"
    stopped_early: bool = False
    finished: bool = False
    sessions: list[dict] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        """Total wall time of all epochs, in seconds."""
        return sum(h["seconds"] for h in self.history)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int, lr: float, plateau_patience: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    total = epochs * steps_per_epoch
    if schedule == "constant":
        return None
    if schedule == "plateau":  # stepped once per epoch with the validation score
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR, patience=plateau_patience)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=0.15)


def _as_list(value: float | list[float]) -> list[float]:
    return list(value) if isinstance(value, list) else [value]


def data_fingerprint(batches: Iterable) -> str:
    """What ``batches`` hold and how they are drawn: its ``fingerprint()`` when it has one (like
    :class:`kdcourse.data.TensorBatches`), else only its type and length (weaker: say so by name)."""
    if hasattr(batches, "fingerprint"):
        return batches.fingerprint()
    return f"unfingerprinted {type(batches).__qualname__} of {len(batches)} batches"  # type: ignore[arg-type]


def run_identity(
    model: nn.Module, train_batches: Iterable, loss_fn: LossFn | None, val_data: tuple | None, **settings: object
) -> dict[str, str]:
    """The arguments that shape a :func:`fit` run, as strings: the architecture (names and shapes of its
    state), the initial weights, the training data, the validation labels and inputs, the loss and every
    setting in ``settings`` (epochs, lr, schedule, seed…). Device and precision are left out on purpose:
    a run may resume on another machine, and its sessions say which trained what."""
    architecture = ";".join(f"{name}:{tuple(value.shape)}" for name, value in model.state_dict().items())
    identity = {
        "model": f"{type(model).__qualname__}[{hashlib.blake2b(architecture.encode(), digest_size=8).hexdigest()}]",
        "initial weights": checkpoints.module_fingerprint(model),
        "training data": data_fingerprint(train_batches),
        "loss": checkpoints.describe_callable(loss_fn),
    }
    if val_data is not None:
        x_val, y_val = val_data
        inputs = checkpoints.tensor_fingerprint(x_val) if isinstance(x_val, Tensor) else data_fingerprint(x_val)
        identity["validation data"] = f"{inputs}/{checkpoints.tensor_fingerprint(y_val)}"
    identity.update({key: repr(value) for key, value in settings.items()})
    return identity


def _check_same_run(path: Path, stored: dict[str, str] | None, identity: dict[str, str]) -> None:
    if stored is None:
        raise checkpoints.RunMismatchError(
            f"{path} was written before checkpoints named their run, so it cannot be checked against this one; "
            "delete it to train the run again."
        )
    changed = [key for key in sorted(set(stored) | set(identity)) if stored.get(key) != identity.get(key)]
    if changed:
        details = "; ".join(f"{key}: checkpoint {stored.get(key)!r}, now {identity.get(key)!r}" for key in changed[:3])
        raise checkpoints.RunMismatchError(
            f"{path} holds another run than the one asked for ({details}). Delete the file, or give this run "
            "its own checkpoint path, to train it from the start."
        )


def fit(
    model: nn.Module,
    train_batches: Iterable,
    loss_fn: LossFn | None = None,
    *,
    epochs: int,
    val_data: tuple[Tensor, Tensor] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    schedule: str = "constant",
    plateau_patience: int = 2,
    early_stopping_patience: int | None = None,
    restore_best: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool | None = None,
    description: str = "train",
    class_logits: OutputMap | None = None,
    val_metric: str = "accuracy",
) -> FitResult:
    """Train ``model`` with AdamW (Adam when ``weight_decay`` is 0) or SGD and return its :class:`FitResult`.

    Args:
        model: a module returning logits ``(N, C)``, or a stacked model returning ``(G, N, C)``
            whose state tensors all have the member index as their first dimension (then each
            member is selected on its own validation score).
        train_batches: iterable of ``(inputs, targets, *extras)``; if it has ``set_epoch`` (like
            :class:`kdcourse.data.TensorBatches`) it is called with the 0-based epoch.
        loss_fn: ``loss_fn(logits, targets, *extras) -> scalar``; default cross-entropy.
        epochs: maximum number of epochs.
        val_data: ``(x_val, y_val)`` evaluated after each epoch (``x_val`` a tensor or an iterable
            of input batches in a fixed order); the best epoch by ``val_metric`` is selected (and its
            weights restored when ``restore_best``).
        lr, weight_decay: optimiser settings (for SGD, ``weight_decay`` is the L2 penalty added to the gradient).
        optimizer: ``"adamw"`` (the fused kernel) or ``"sgd"`` (with ``momentum``), as in the thesis's regime.
        schedule: ``"constant"``, ``"cosine"`` (to zero over the run) or ``"onecycle"``, stepped per batch; or
            ``"plateau"``: the learning rate is multiplied by :data:`PLATEAU_FACTOR` after ``plateau_patience``
            epochs without a better validation score (needs ``val_data``; a stacked model's mean score).
        early_stopping_patience: stop after this many epochs in which no member improved on validation.
        checkpoint: file written after every epoch; if it exists the run resumes from it, and a
            finished run is returned without training. It records :func:`run_identity`, and a file
            of another run raises :class:`kdcourse.checkpoints.RunMismatchError` (a damaged one
            :class:`~kdcourse.checkpoints.CorruptCheckpointError`, a file that another process is
            training into :class:`~kdcourse.checkpoints.RunInUseError`), each naming the file.
        seed: seeds the randomness drawn during training (dropout); initialise the model under
            the same seed before calling ``fit`` for a fully reproducible run.
        amp_dtype: e.g. ``torch.bfloat16`` to run forward passes in mixed precision.
        progress: show a progress bar (default: :func:`progress_enabled`).
        class_logits: maps the model's outputs to class logits for validation (see :func:`evaluate`).
        val_metric: the validation metric that selects the best epoch, a name in :data:`METRICS`
            (``"accuracy"``; ``"auc"`` for a two-class problem with imbalanced classes).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "plateau" and (val_data is None or plateau_patience < 0):
        raise ValueError("the plateau schedule needs val_data and a plateau_patience >= 0")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if early_stopping_patience is not None and (val_data is None or early_stopping_patience < 1):
        raise ValueError("early stopping needs val_data and a patience >= 1")
    _metric(val_metric)
    device = torch.device(device)
    given_loss = loss_fn
    loss_fn = loss_fn or (lambda logits, targets, *_: F.cross_entropy(logits.float(), targets))
    model.to(device)
    # the fused kernel makes one pass over each parameter: the update is memory-bound for MLPs
    optimizer_name = optimizer
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))
    scheduler = _make_scheduler(optimizer, schedule, epochs, len(train_batches), lr, plateau_patience)  # type: ignore[arg-type]
    per_batch = scheduler is not None and schedule != "plateau"

    path = Path(checkpoint) if checkpoint is not None else None
    identity = None
    if path is not None:
        # settings that only some runs have enter only there, so that a checkpoint written before they existed still matches
        optional = ({"optimizer": "sgd", "momentum": momentum} if optimizer_name == "sgd" else {}) | (
            {"plateau_patience": plateau_patience} if schedule == "plateau" else {})
        identity = run_identity(model, train_batches, given_loss, val_data, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                schedule=schedule, early_stopping_patience=early_stopping_patience, seed=seed,
                                val_metric=val_metric, class_logits=checkpoints.describe_callable(class_logits), **optional)
    with checkpoints.RunLock(path) if path is not None else contextlib.nullcontext():  # one process per run
        result = FitResult(metric=val_metric)
        best_state: dict[str, Tensor] | None = None
        best_score: Tensor | None = None  # (G,) best validation score per member
        best_epoch: Tensor | None = None
        stale_epochs = 0
        torch.manual_seed(seed)
        if path is not None and path.exists():
            state = checkpoints.load(path, map_location=device)
            _check_same_run(path, state.get("identity") if isinstance(state, dict) else None, identity)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            best_state, best_score, best_epoch = state["best_model"], state["best_score"], state["best_epoch"]
            stale_epochs = state["stale_epochs"]
            result = FitResult(**state["result"])
            if result.finished:
                if restore_best and best_state is not None:
                    model.load_state_dict(best_state)
                provenance.note_training(str(path), result.sessions)
                return result

        show = progress_enabled() if progress is None else progress
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, initial=len(result.history), desc=description, leave=False)
        session: dict | None = None
        for epoch in range(len(result.history), epochs):
            if session is None:
                session = {"commit": provenance.code_commit(), "device": provenance.device_description(),
                           "started": provenance.utc_now(), "ended": None, "epochs": 0, "seconds": 0.0}
                result.sessions.append(session)
            start = time.perf_counter()
            model.train()
            if hasattr(train_batches, "set_epoch"):
                train_batches.set_epoch(epoch)
            total_loss, total_count = torch.zeros(()), 0
            for inputs, targets, *extras in train_batches:
                inputs, targets = inputs.to(device), targets.to(device)
                extras = [e.to(device) for e in extras]
                with _autocast(amp_dtype, device):
                    logits = model(inputs)
                loss = loss_fn(logits.float(), targets, *extras)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if per_batch:
                    scheduler.step()
                total_loss += loss.detach().cpu() * len(targets)
                total_count += len(targets)
            record: dict = {"epoch": epoch + 1, "train_loss": (total_loss / total_count).item(), "lr": optimizer.param_groups[0]["lr"]}
            if val_data is not None:
                scores = evaluate(model, *val_data, device=device, amp_dtype=amp_dtype, class_logits=class_logits,
                                  metric=val_metric)
                record.update({f"val_{name}": value for name, value in scores.items()})
                score = torch.tensor(_as_list(scores[val_metric]))
                state_now = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if best_state is None:
                    improved = torch.ones_like(score, dtype=torch.bool)
                    best_state, best_score, best_epoch = state_now, score, torch.full_like(score, epoch + 1)
                else:
                    improved = score > best_score
                    for key, value in state_now.items():
                        if value.dim() == 0 or len(improved) == 1:
                            if improved.all():
                                best_state[key] = value
                        else:
                            best_state[key][improved] = value[improved]
                    best_score = torch.where(improved, score, best_score)
                    best_epoch = torch.where(improved, torch.full_like(score, epoch + 1), best_epoch)
                stale_epochs = 0 if improved.any() else stale_epochs + 1
                if schedule == "plateau":
                    scheduler.step(score.mean().item())
                stacked = isinstance(scores["accuracy"], list)
                result.best_val_score = best_score.tolist() if stacked else best_score.item()
                result.best_epoch = best_epoch.int().tolist() if stacked else int(best_epoch.item())
            else:
                result.best_epoch = epoch + 1
            record["seconds"] = time.perf_counter() - start
            result.history.append(record)
            session.update(ended=provenance.utc_now(), epochs=session["epochs"] + 1,
                           seconds=round(session["seconds"] + record["seconds"], 3))
            stop = early_stopping_patience is not None and stale_epochs >= early_stopping_patience
            result.stopped_early = stop
            result.finished = stop or epoch + 1 == epochs
            if path is not None:
                checkpoints.save(
                    {
                        "identity": identity,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                        "best_model": best_state,
                        "best_score": best_score,
                        "best_epoch": best_epoch,
                        "stale_epochs": stale_epochs,
                        "result": asdict(result),
                    },
                    path,
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train_loss=f"{record['train_loss']:.4f}")
            if stop:
                break
        if bar is not None:
            bar.close()
        if restore_best and best_state is not None:
            model.load_state_dict(best_state)
        provenance.note_training(str(path) if path is not None else f"unsaved-{id(result)}", result.sessions)
        return result
