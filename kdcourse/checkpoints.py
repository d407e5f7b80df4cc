"""Files that let a long run stop and resume safely: fingerprints, guarded loading, one writer at a time.

A checkpoint is only worth resuming if it belongs to the run being asked for, and a cache is only
worth reading if it was computed from the same network and inputs. This module gives the pieces
that :func:`kdcourse.train.fit` and the caches of :mod:`kdcourse.kd.teachers` use for that:

* :func:`tensor_fingerprint`, :func:`module_fingerprint` and :func:`describe_callable` turn data,
  weights and a loss function into short strings that change when they change;
* :func:`save` writes atomically, with a checksum of its bytes; :func:`load` turns a truncated,
  corrupt or damaged (checksum no longer matches) file into an error that names it and says how to
  discard it; :func:`check_same_run` refuses a checkpoint of another run; :func:`cached` reuses a
  computed value only for the key (fingerprints) it was computed for, and computes it once when
  several processes ask for it at the same time;
* :class:`RunLock` lets one process at a time train into a checkpoint file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import sys
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "CorruptCheckpointError", "RunMismatchError", "RunInUseError", "tensor_fingerprint", "module_fingerprint",
    "describe_callable", "check_same_run", "load", "save", "cached", "RunLock",
]


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or cache file exists but cannot be read (truncated, corrupt, or not a torch file)."""


class RunMismatchError(RuntimeError):
    """A checkpoint belongs to another run than the one asked to resume from it."""


class RunInUseError(RuntimeError):
    """Another process is training into the same checkpoint file."""


def _tensor_digest(tensor: Tensor) -> str:
    """A hash of one tensor's dtype, shape and bytes, computed afresh on every call: no memo can be
    trusted, since a fused optimiser step and writes through ``.data`` or ``.numpy()`` change values
    without bumping ``tensor._version``."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.blake2b(f"{flat.dtype}{tuple(tensor.shape)}".encode(), digest_size=16)
    digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def tensor_fingerprint(*tensors: Tensor) -> str:
    """A 32-hex-digit hash of the dtypes, shapes and values of ``tensors`` (in order).

    Every call hashes the values again, at about 0.5 GB/s on one core (the 47 MB of a ResNet-18's
    weights take about 0.1 s).
    """
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(_tensor_digest(tensor).encode())
    return digest.hexdigest()


def module_fingerprint(module: nn.Module) -> str:
    """A hash of a module's state: every parameter and buffer, by name, shape, dtype and value."""
    state = module.state_dict(keep_vars=True)  # the tensors themselves: no detached copies
    digest = hashlib.blake2b(digest_size=16)
    for name, value in state.items():
        digest.update(name.encode())
        if isinstance(value, Tensor):
            digest.update(_tensor_digest(value).encode())
    return digest.hexdigest()


_PLAIN = (bool, int, float, str, bytes, type(None))


def _describe_value(value: Any, depth: int) -> str:
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, Tensor):
        return f"tensor:{tensor_fingerprint(value)}"
    if isinstance(value, nn.Module):
        return f"{type(value).__qualname__}:{module_fingerprint(value)}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_describe_value(v, depth) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_describe_value(v, depth)}" for k, v in sorted(value.items(), key=repr)) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return f"{type(value).__qualname__}({_describe_value(fields, depth)})"
    if callable(value) and depth > 0:
        return describe_callable(value, depth=depth - 1)
    return type(value).__qualname__  # an object without a stable description: its type only


_LONG = 200  # characters: a submodule described at greater length is named by a digest of its description


def _describe_module(module: nn.Module) -> str:
    """``Type(extra_repr; child=Type(…), …)``: a module's hyper-parameters and those of its parts, recursively.
    A part of a long description (a whole network) is given as its type and a digest of it."""
    parts = []
    for name, child in module.named_children():
        text = _describe_module(child)
        if len(text) > _LONG:
            text = f"{type(child).__qualname__}[{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}]"
        parts.append(f"{name}={text}")
    inner = "; ".join(part for part in (module.extra_repr(), ", ".join(parts)) if part)
    return f"{type(module).__qualname__}({inner})"


def describe_callable(fn: Callable | None, *, depth: int = 3) -> str:
    """A description of a function that changes when its behaviour's inputs change.

    Names the function (module and qualified name) and describes what it closes over, its default
    arguments, the simple module globals its code reads (numbers, strings, tuples) and, for a
    :func:`functools.partial`, its bound arguments: numbers and strings by value, tensors and
    modules by fingerprint, nested functions to ``depth`` levels. ``None`` stands for the default
    loss (cross-entropy). The description never contains a memory address.
    """
    if fn is None:
        return "cross_entropy"
    if isinstance(fn, functools.partial):
        bound = _describe_value([list(fn.args), dict(fn.keywords)], depth)
        return f"partial({describe_callable(fn.func, depth=depth)}, {bound})"
    if isinstance(fn, nn.Module):  # a distillation method: its type, hyper-parameters, parts and state
        return f"{type(fn).__module__}.{_describe_module(fn)}[{module_fingerprint(fn)}]"
    target = getattr(fn, "__func__", fn)  # a bound method: its function
    if not hasattr(target, "__code__"):  # a callable object: a dataclass by its fields, else by its type
        if dataclasses.is_dataclass(target):
            return _describe_value(target, depth)
        return type(target).__qualname__
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__qualname__)}"
    parts = []
    if target is not fn and getattr(fn, "__self__", None) is not None:  # a bound method: its object too
        parts.append(f"self={_describe_value(fn.__self__, depth - 1)}")
    closure = getattr(target, "__closure__", None) or ()
    names = getattr(getattr(target, "__code__", None), "co_freevars", ())
    for cell_name, cell in zip(names, closure):
        try:
            parts.append(f"{cell_name}={_describe_value(cell.cell_contents, depth)}")
        except ValueError:  # an empty cell
            parts.append(f"{cell_name}=<empty>")
    defaults = getattr(target, "__defaults__", None)
    if defaults:
        parts.append(f"defaults={_describe_value(list(defaults), depth)}")
    kwdefaults = getattr(target, "__kwdefaults__", None)
    if kwdefaults:
        parts.append(f"kwdefaults={_describe_value(kwdefaults, depth)}")
    read = _simple_globals(target)
    if read:
        parts.append(f"globals={_describe_value(read, depth)}")
    return f"{name}({', '.join(parts)})"


def _simple(value: Any) -> bool:
    """Whether ``value`` is a number, string, bytes, None or a tuple of such: a module-level setting."""
    return isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(_simple(v) for v in value))


def _simple_globals(function: Any) -> dict[str, Any]:
    """The module-level globals that ``function``'s code reads (its ``co_names``) and that hold simple
    values (see :func:`_simple`); modules, functions and mutable containers are left out."""
    namespace = getattr(function, "__globals__", {})
    names: list[str] = []
    codes = [function.__code__]
    while codes:  # the function's code and that of the functions and comprehensions defined in it
        code = codes.pop()
        names.extend(code.co_names)
        codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    return {name: namespace[name] for name in sorted(set(names)) if name in namespace and _simple(namespace[name])}


_END = b"PK\x05\x06"  # signature of a zip file's end record: 22 bytes, the last 2 the length of its comment
_SUM = b"kdcourse sha256 "  # the zip comment of a file written by save: this, then 64 hex digits
_DISCARD = "Delete it to compute it again (a checkpoint: that run starts over; a cache: it is recomputed)."


def _verified(path: Path, data: bytes) -> bytes:
    """``data`` (a file written by :func:`torch.save`), checked against the sha256 that :func:`save` put in
    its zip comment; a file without one (written before checkpoints carried it) is returned unchecked."""
    size = len(_SUM) + 64
    if len(data) < 22 + size or data[-size - 22:-size - 18] != _END or data[-size - 2:-size] != size.to_bytes(2, "little") \
            or not data[-size:].startswith(_SUM):
        return data
    stored, actual = data[-64:].decode("ascii", "replace"), hashlib.sha256(memoryview(data)[:-size - 2]).hexdigest()
    if stored != actual:
        raise CorruptCheckpointError(
            f"{path} is damaged: its contents no longer match the checksum saved with them (sha256 {stored[:12]}…, "
            f"now {actual[:12]}…), e.g. bits flipped on disk or in a copy. {_DISCARD}"
        )
    return data


def load(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", weights_only: bool = False) -> Any:
    """Read a torch file, checking the checksum that :func:`save` stores in it; a truncated, corrupt or
    damaged one raises :class:`CorruptCheckpointError` naming it."""
    path = Path(path)
    data = _verified(path, path.read_bytes())
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, … for damaged files
        raise CorruptCheckpointError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); it is truncated or corrupt. {_DISCARD}"
        ) from exc


def save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` with :func:`torch.save`, with the sha256 of the bytes in the zip file's comment (so
    that :func:`load` notices flipped bits and :func:`torch.load` still reads it), atomically: through a
    temporary file of a name of its own in the same folder, then renamed, so that an interruption never
    leaves half a file and two processes writing one path at once both succeed (the last one wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()[:-2]  # without the length of the (empty) comment
    if data[-20:-16] != _END or buffer.getbuffer()[-2:] != b"\0\0":  # pragma: no cover - torch ends with an empty comment
        raise RuntimeError("torch.save wrote an unexpected layout: cannot add a checksum")
    comment = _SUM + hashlib.sha256(data).hexdigest().encode()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as file:
            file.write(data)
            file.write(len(comment).to_bytes(2, "little") + comment)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_same_run(path: Path, stored: dict[str, str] | None, identity: dict[str, str]) -> None:
    """Raise :class:`RunMismatchError` naming ``path`` and up to three differences unless the identity
    ``stored`` in a checkpoint is the run's ``identity`` (see :func:`kdcourse.train.run_identity`)."""
    if stored is None:
        raise RunMismatchError(
            f"{path} was written before checkpoints named their run, so it cannot be checked against this one; "
            "delete it to train the run again."
        )
    changed = [key for key in sorted(set(stored) | set(identity)) if stored.get(key) != identity.get(key)]
    if changed:
        details = "; ".join(f"{key}: checkpoint {stored.get(key)!r}, now {identity.get(key)!r}" for key in changed[:3])
        raise RunMismatchError(
            f"{path} holds another run than the one asked for ({details}). Delete the file, or give this run "
            "its own checkpoint path, to train it from the start."
        )


T = TypeVar("T")


def cached(path: str | os.PathLike[str] | None, key: dict[str, str], compute: Callable[[], T], *,
           with_seconds: bool = False) -> T | tuple[T, float]:
    """``compute()``, read from ``path`` when the file holds the value computed for ``key`` (e.g.
    fingerprints of the weights and inputs), else computed and written there with its key and the seconds
    it took. Without ``path`` it is simply computed. A damaged file raises :class:`CorruptCheckpointError`.
    With ``with_seconds`` it returns ``(value, seconds)``: the seconds of the computation, whenever it ran
    (NaN for a file written before they were kept), so that a run read back can still say what it cost.

    Processes that fill one file at once compute it once: the first holds a :class:`RunLock` on it
    while it computes, the others wait for it and read its value."""
    if path is None:
        start = time.perf_counter()
        value = compute()
        return (value, time.perf_counter() - start) if with_seconds else value
    path = Path(path)
    found = _stored(path, key)
    if found is None:
        with RunLock(path, doing="computing"):
            found = _stored(path, key)  # written by another process while this one waited
            if found is None:
                start = time.perf_counter()
                value = compute()
                seconds = time.perf_counter() - start
                save({"key": key, "value": value, "seconds": seconds}, path)
                found = (value, seconds)
    return found if with_seconds else found[0]


def _stored(path: Path, key: dict[str, str]) -> tuple[Any, float] | None:
    """``(value, seconds)`` when the cache file at ``path`` holds the value computed for ``key``, else None."""
    if not path.is_file():
        return None
    stored = load(path, weights_only=True)
    if isinstance(stored, dict) and stored.get("key") == key and "value" in stored:  # else another layout: recompute
        return stored["value"], float(stored.get("seconds", float("nan")))
    return None


class RunLock:
    """An exclusive lock on ``<checkpoint>.lock`` for as long as a run trains into ``checkpoint`` (or,
    with ``doing="computing"``, a process computes a cache file).

    The lock is an advisory ``flock``: the operating system drops it when its process ends, however it
    ends, so a killed run never leaves a stale lock. A second process that asks for the same lock
    waits for it (saying so on stderr, with the holder's pid), then finds the first one's checkpoint:
    two chapters that need the same teacher train it once. With ``wait=False`` it raises
    :class:`RunInUseError` instead. Where ``fcntl`` does not exist (Windows) the lock does nothing.
    """

    def __init__(self, checkpoint: str | os.PathLike[str], *, wait: bool = True, doing: str = "training into") -> None:
        self.path = Path(checkpoint).with_name(Path(checkpoint).name + ".lock")
        self.wait = wait
        self.doing = doing
        self._file: Any = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            message = f"another process (pid {holder}) is {self.doing} {self.path.with_suffix('')}"
            if not self.wait:
                handle.close()
                raise RunInUseError(f"{message}; wait for it to finish, or stop it, before starting this run again.") from None
            print(f"{message}: waiting for it to finish", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
