"""Training and evaluation loops for any model and any distillation method.

``fit`` trains on an iterable of batches ``(inputs, targets, *extras)`` and calls its method
(:class:`kdcourse.kd.method.Method`) as ``method(outputs, targets, *extras, inputs=..., features=...)``;
extras carry, for example, cached teacher logits, and ``features`` the student's intermediate outputs
that the method asks for by module path. It validates every epoch, keeps the weights of the best
validation epoch (model selection never looks at the test set), can stop early, follows a
learning-rate schedule and writes a checkpoint after every epoch so that an interrupted run resumes
where it stopped. The checkpoint names the run
(:func:`run_identity`): a checkpoint of another run is refused rather than resumed, and one process
at a time trains into it (:class:`kdcourse.checkpoints.RunLock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcourse import checkpoints, provenance
from kdcourse.kd.features import capture
from kdcourse.kd.method import LossFn, Method, as_method
from kdcourse.metrics import roc_auc
from kdcourse.optim import OPTIMIZERS, PLATEAU_FACTOR, SCHEDULES, make_optimizer, make_scheduler

__all__ = ["FitResult", "fit", "evaluate", "predict_logits", "progress_enabled", "run_identity", "data_fingerprint", "METRICS",
           "PLATEAU_FACTOR"]

OutputMap = Callable[[Tensor], Tensor]  # model outputs (N, K) → class logits (N, C)
Metric = Callable[[Tensor, Tensor], float]  # (class logits (N, C), labels (N,)) → score, higher is better


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
    :func:`kdcourse.provenance.code_commit`), ``device``, ``threads`` (``torch.get_num_threads()``),
    ``started``/``ended`` (UTC), ``epochs`` and ``seconds``, so that a resumed run still names the code
    that trained it.
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


def _as_list(value: float | list[float]) -> list[float]:
    return list(value) if isinstance(value, list) else [value]


def data_fingerprint(batches: Iterable) -> str:
    """What ``batches`` hold and how they are drawn: its ``fingerprint()`` when it has one (like
    :class:`kdcourse.data.TensorBatches`), else only its type and length (weaker: say so by name)."""
    if hasattr(batches, "fingerprint"):
        return batches.fingerprint()
    return f"unfingerprinted {type(batches).__qualname__} of {len(batches)} batches"  # type: ignore[arg-type]


def run_identity(
    model: nn.Module, train_batches: Iterable, loss_fn: Method | LossFn | None, val_data: tuple | None, **settings: object
) -> dict[str, str]:
    """The arguments that shape a :func:`fit` run, as strings: the architecture (names and shapes of its
    state, and its module structure as ``repr`` gives it: layers, activations, dropout rates), the
    initial weights, the training data, the validation labels and inputs, the loss and every setting in
    ``settings`` (epochs, lr, schedule, seed…). Device, precision and thread count are left out on
    purpose: a run may resume on another machine, and its sessions say which trained what."""
    shapes = ";".join(f"{name}:{tuple(value.shape)}" for name, value in model.state_dict().items())
    structure = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))  # a function shown in a repr: no memory address
    architecture = f"{shapes}\n{structure}"
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


def fit(
    model: nn.Module,
    train_batches: Iterable,
    loss_fn: Method | LossFn | None = None,
    *,
    epochs: int,
    val_data: tuple[Tensor, Tensor] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    nesterov: bool = False,
    norm_lr_scale: float = 1.0,
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
            :class:`kdcourse.data.TensorBatches`) it is called with the 0-based epoch, and so is the model's
            ``set_epoch`` where it has one (e.g. to freeze a layer after some epochs).
        loss_fn: the objective: a :class:`kdcourse.kd.method.Method` (its adapters are trained with the
            model and saved in the checkpoint; the features it asks for are hooked on the model for the
            run), or a function ``loss_fn(logits, targets, *extras) -> scalar`` called on float32 logits;
            default cross-entropy.
        epochs: maximum number of epochs.
        val_data: ``(x_val, y_val)`` evaluated after each epoch (``x_val`` a tensor or an iterable
            of input batches in a fixed order); the best epoch by ``val_metric`` is selected (and the
            model's weights of that epoch restored when ``restore_best``; a method's adapters keep their last state).
        lr, weight_decay: optimiser settings (for SGD, ``weight_decay`` is the L2 penalty added to the gradient).
        optimizer: ``"adamw"`` (the fused kernel) or ``"sgd"`` (with ``momentum``; Nesterov's when ``nesterov``).
        norm_lr_scale: the learning rate of BatchNorm parameters is ``lr · norm_lr_scale`` and their weight decay
            ``weight_decay / norm_lr_scale`` (see :func:`kdcourse.optim.make_optimizer`).
        schedule: ``"constant"``, ``"cosine"`` (to zero over the run), ``"onecycle"`` or ``"triangle"`` (linear up,
            then down; :func:`kdcourse.optim.triangle_factor`), stepped per batch; or
            ``"plateau"``: the learning rate is multiplied by :data:`PLATEAU_FACTOR` after ``plateau_patience``
            epochs without a better validation score (needs ``val_data``; a stacked model's mean score).
        early_stopping_patience: stop after this many epochs in which no member improved on validation.
        checkpoint: file written after every epoch; if it exists the run resumes from it, and a
            finished run is returned without training. It records :func:`run_identity`, and a file
            of another run raises :class:`kdcourse.checkpoints.RunMismatchError` (a damaged one
            :class:`~kdcourse.checkpoints.CorruptCheckpointError`, a file that another process is
            training into :class:`~kdcourse.checkpoints.RunInUseError`), each naming the file.
        seed: seeds the randomness drawn during training (dropout); initialise the model (and a
            method's adapters) under the same seed before calling ``fit`` for a fully reproducible run.
        amp_dtype: e.g. ``torch.bfloat16`` to run forward passes in mixed precision.
        progress: show a progress bar (default: :func:`progress_enabled`).
        class_logits: maps the model's outputs to class logits for validation (see :func:`evaluate`).
        val_metric: the validation metric that selects the best epoch, a name in :data:`METRICS`
            (``"accuracy"``; ``"auc"`` for a two-class problem with imbalanced classes).
    """
    _check_arguments(epochs=epochs, schedule=schedule, plateau_patience=plateau_patience, val_data=val_data,
                     optimizer=optimizer, momentum=momentum, lr=lr, early_stopping_patience=early_stopping_patience,
                     val_metric=val_metric, nesterov=nesterov, norm_lr_scale=norm_lr_scale)
    device = torch.device(device)
    method = as_method(loss_fn)
    model.to(device)
    method.to(device)
    opt = make_optimizer(optimizer, model, method, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                         norm_lr_scale=norm_lr_scale, device=device)
    scheduler = make_scheduler(opt, schedule, epochs, len(train_batches), plateau_patience)  # type: ignore[arg-type]
    path = Path(checkpoint) if checkpoint is not None else None
    identity = None
    if path is not None:
        # settings that only some runs have enter only there, so that a checkpoint written before they existed still matches
        optional = ({"optimizer": "sgd", "momentum": momentum} if optimizer == "sgd" else {}) | (
            {"plateau_patience": plateau_patience} if schedule == "plateau" else {}) | (
            {"nesterov": True} if nesterov else {}) | ({"norm_lr_scale": norm_lr_scale} if norm_lr_scale != 1.0 else {})
        identity = run_identity(model, train_batches, loss_fn, val_data, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                schedule=schedule, early_stopping_patience=early_stopping_patience, seed=seed,
                                val_metric=val_metric, class_logits=checkpoints.describe_callable(class_logits), **optional)
    with checkpoints.RunLock(path) if path is not None else contextlib.nullcontext():  # one process per run
        torch.manual_seed(seed)
        run = _RunState(FitResult(metric=val_metric))
        if path is not None and path.exists():
            run = _resume(path, identity, model, method, opt, scheduler, device)
            if run.result.finished:
                return _finish(model, run, restore_best, path)
        bar = _progress_bar(progress, epochs, len(run.result.history), description)
        session: dict | None = None
        with capture(model, method.student_features) as features:  # the hooks live as long as the run
            for epoch in range(len(run.result.history), epochs):
                session = session or _start_session(run.result)
                start = time.perf_counter()
                train_loss = _train_epoch(model, method, train_batches, features, opt, None if schedule == "plateau" else scheduler,
                                          epoch=epoch, device=device, amp_dtype=amp_dtype)
                record: dict = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"]}
                if val_data is not None:
                    scores = evaluate(model, *val_data, device=device, amp_dtype=amp_dtype, class_logits=class_logits,
                                      metric=val_metric)
                    record.update({f"val_{name}": value for name, value in scores.items()})
                    score = _select(run, model, scores, val_metric, epoch)
                    if schedule == "plateau":
                        scheduler.step(score.mean().item())
                else:
                    run.result.best_epoch = epoch + 1
                stop = early_stopping_patience is not None and run.stale_epochs >= early_stopping_patience
                _end_epoch(run.result, session, record, time.perf_counter() - start, stop=stop, last=epoch + 1 == epochs)
                if path is not None:
                    _save(path, identity, model, method, opt, scheduler, run, device)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(train_loss=f"{train_loss:.4f}")
                if stop:
                    break
        if bar is not None:
            bar.close()
        return _finish(model, run, restore_best, path)


def _check_arguments(*, epochs: int, schedule: str, plateau_patience: int, val_data: tuple | None, optimizer: str,
                     momentum: float, lr: float, early_stopping_patience: int | None, val_metric: str, nesterov: bool,
                     norm_lr_scale: float) -> None:
    """Raise ``ValueError`` naming the first of :func:`fit`'s settings that is out of range."""
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
    if nesterov and (optimizer != "sgd" or momentum == 0.0):
        raise ValueError(f"Nesterov momentum needs optimizer='sgd' and momentum > 0, got {optimizer!r} with momentum {momentum}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if norm_lr_scale <= 0:
        raise ValueError(f"norm_lr_scale must be > 0, got {norm_lr_scale}")
    if early_stopping_patience is not None and (val_data is None or early_stopping_patience < 1):
        raise ValueError("early stopping needs val_data and a patience >= 1")
    _metric(val_metric)


@dataclass
class _RunState:
    """What a run carries from epoch to epoch besides the weights: its result so far and the model selection
    (best weights, score ``(G,)`` and epoch ``(G,)`` per member; epochs since any member improved)."""

    result: FitResult
    best_state: dict[str, Tensor] | None = None
    best_score: Tensor | None = None
    best_epoch: Tensor | None = None
    stale_epochs: int = 0


def _train_epoch(model: nn.Module, method: Method, batches: Iterable, features: dict[str, Tensor],
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None, *, epoch: int,
                 device: torch.device, amp_dtype: torch.dtype | None) -> float:
    """One pass over ``batches`` (``scheduler`` stepped per batch); returns the mean training loss per sample."""
    model.train()
    method.train()
    for epoch_aware in (batches, model):
        if hasattr(epoch_aware, "set_epoch"):
            epoch_aware.set_epoch(epoch)
    total_loss, total_count = torch.zeros(()), 0
    for inputs, targets, *extras in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        extras = [e.to(device) for e in extras]
        with _autocast(amp_dtype, device):
            outputs = model(inputs)  # the hooks fill ``features``
        loss = method(outputs, targets, *extras, inputs=inputs, features=features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach().cpu() * len(targets)
        total_count += len(targets)
    features.clear()  # let the last batch's activations go
    return (total_loss / total_count).item()


def _select(run: _RunState, model: nn.Module, scores: dict, metric: str, epoch: int) -> Tensor:
    """Keep the weights of each member whose validation ``metric`` improved; returns this epoch's scores ``(G,)``."""
    score = torch.tensor(_as_list(scores[metric]))
    state_now = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if run.best_state is None:
        improved = torch.ones_like(score, dtype=torch.bool)
        run.best_state, run.best_score, run.best_epoch = state_now, score, torch.full_like(score, epoch + 1)
    else:
        improved = score > run.best_score
        for key, value in state_now.items():
            if value.dim() == 0 or len(improved) == 1:
                if improved.all():
                    run.best_state[key] = value
            else:
                run.best_state[key][improved] = value[improved]
        run.best_score = torch.where(improved, score, run.best_score)
        run.best_epoch = torch.where(improved, torch.full_like(score, epoch + 1), run.best_epoch)
    run.stale_epochs = 0 if improved.any() else run.stale_epochs + 1
    stacked = isinstance(scores["accuracy"], list)
    run.result.best_val_score = run.best_score.tolist() if stacked else run.best_score.item()
    run.result.best_epoch = run.best_epoch.int().tolist() if stacked else int(run.best_epoch.item())
    return score


def _start_session(result: FitResult) -> dict:
    """A new entry of ``result.sessions`` for this process: which code, on which device with how many
    threads, since when. Warns when an earlier session of the run used another number of threads: CPU
    kernels split their sums by thread, so the resumed run is then not bitwise the uninterrupted one."""
    threads = torch.get_num_threads()
    earlier = sorted({s["threads"] for s in result.sessions if "threads" in s} - {threads})
    if earlier:
        warnings.warn(f"resuming a run trained with {', '.join(map(str, earlier))} CPU threads on {threads} threads: "
                      "its weights may differ in the last bits from an uninterrupted run; call torch.set_num_threads("
                      f"{earlier[-1]}) before fit for bitwise-identical weights", RuntimeWarning, stacklevel=3)
    session = {"commit": provenance.code_commit(), "device": provenance.device_description(), "threads": threads,
               "started": provenance.utc_now(), "ended": None, "epochs": 0, "seconds": 0.0}
    result.sessions.append(session)
    return session


def _end_epoch(result: FitResult, session: dict, record: dict, seconds: float, *, stop: bool, last: bool) -> None:
    """Append the epoch's ``record`` (with its wall time) to the history and count it in the session."""
    record["seconds"] = seconds
    result.history.append(record)
    session.update(ended=provenance.utc_now(), epochs=session["epochs"] + 1, seconds=round(session["seconds"] + seconds, 3))
    result.stopped_early = stop
    result.finished = stop or last


def _save(path: Path, identity: dict[str, str] | None, model: nn.Module, method: Method, optimizer: torch.optim.Optimizer,
          scheduler: object | None, run: _RunState, device: torch.device) -> None:
    """Write everything the next epoch depends on, atomically (:func:`kdcourse.checkpoints.save`)."""
    checkpoints.save(
        {
            "identity": identity,
            "model": model.state_dict(),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "best_model": run.best_state,
            "best_score": run.best_score,
            "best_epoch": run.best_epoch,
            "stale_epochs": run.stale_epochs,
            "result": asdict(run.result),
        },
        path,
    )


def _resume(path: Path, identity: dict[str, str] | None, model: nn.Module, method: Method, optimizer: torch.optim.Optimizer,
            scheduler: object | None, device: torch.device) -> _RunState:
    """Load the checkpoint at ``path`` (after checking that it holds this run) into the model, the method,
    the optimiser, the scheduler and the random number generators; returns the run's state."""
    state = checkpoints.load(path, map_location=device)
    checkpoints.check_same_run(path, state.get("identity") if isinstance(state, dict) else None, identity)
    model.load_state_dict(state["model"])
    method.load_state_dict(state.get("method", {}))  # checkpoints written before methods had state hold none
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return _RunState(FitResult(**state["result"]), state["best_model"], state["best_score"], state["best_epoch"],
                     state["stale_epochs"])


def _progress_bar(progress: bool | None, epochs: int, done: int, description: str) -> object | None:
    if not (progress_enabled() if progress is None else progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=done, desc=description, leave=False)


def _finish(model: nn.Module, run: _RunState, restore_best: bool, path: Path | None) -> FitResult:
    """Restore the best weights (when asked and known), note the run's sessions and return its result."""
    if restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    provenance.note_training(str(path) if path is not None else f"unsaved-{id(run.result)}", run.result.sessions)
    return run.result
