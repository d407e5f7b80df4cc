"""Tests of kdcourse.checkpoints: fingerprints, descriptions of losses, guarded loading and the run lock."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcourse import checkpoints
from kdcourse.kd.hinton import distillation_loss


def test_a_tensor_fingerprint_follows_values_dtype_shape_and_in_place_changes() -> None:
    x = torch.arange(12, dtype=torch.float32)
    first = checkpoints.tensor_fingerprint(x)
    assert first == checkpoints.tensor_fingerprint(x.clone())
    assert first != checkpoints.tensor_fingerprint(x.view(3, 4))
    assert first != checkpoints.tensor_fingerprint(x.double())
    x[5] += 1  # in place: the cached fingerprint must not be reused
    assert first != checkpoints.tensor_fingerprint(x)
    assert checkpoints.tensor_fingerprint(torch.ones(3, dtype=torch.bfloat16)) != checkpoints.tensor_fingerprint(torch.ones(3))


def test_a_module_fingerprint_follows_its_weights() -> None:
    torch.manual_seed(0)
    a = nn.Linear(4, 2)
    torch.manual_seed(0)
    b = nn.Linear(4, 2)
    assert checkpoints.module_fingerprint(a) == checkpoints.module_fingerprint(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert checkpoints.module_fingerprint(a) != checkpoints.module_fingerprint(b)


def _kd(temperature: float, alpha: float):
    return lambda logits, targets, soft: distillation_loss(logits, soft, targets, temperature, alpha)


def test_a_loss_is_described_by_its_name_and_what_it_closes_over() -> None:
    four = checkpoints.describe_callable(_kd(4.0, 0.5))
    assert four == checkpoints.describe_callable(_kd(4.0, 0.5))
    assert "temperature=4.0" in four and "alpha=0.5" in four
    assert four != checkpoints.describe_callable(_kd(8.0, 0.5))
    smoothed = functools.partial(F.cross_entropy, label_smoothing=0.1)
    assert "label_smoothing" in checkpoints.describe_callable(smoothed)
    assert checkpoints.describe_callable(smoothed) != checkpoints.describe_callable(functools.partial(F.cross_entropy, label_smoothing=0.2))
    assert checkpoints.describe_callable(None) == "cross_entropy"
    for description in (four, checkpoints.describe_callable(smoothed), checkpoints.describe_callable(nn.Linear(2, 2).forward)):
        assert not re.search(r"0x[0-9a-f]{6,}", description), description  # no memory address: stable across processes


def test_a_damaged_file_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "logits.pt"
    checkpoints.save({"logits": torch.ones(3)}, path)
    assert torch.equal(checkpoints.load(path)["logits"], torch.ones(3))
    assert not list(tmp_path.glob("*.tmp"))
    path.write_bytes(b"not a torch file")
    with pytest.raises(checkpoints.CorruptCheckpointError, match=rf"{re.escape(str(path))} cannot be read.*Delete it"):
        checkpoints.load(path)
    with pytest.raises(FileNotFoundError):
        checkpoints.load(tmp_path / "absent.pt")


def test_one_run_lock_per_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    with checkpoints.RunLock(checkpoint):
        with pytest.raises(checkpoints.RunInUseError, match="another process"):
            checkpoints.RunLock(checkpoint, wait=False).__enter__()
        with checkpoints.RunLock(tmp_path / "other.ckpt"):  # another run is independent
            pass
    with checkpoints.RunLock(checkpoint):  # released on exit
        pass


def test_a_cached_value_is_reused_only_for_its_key(tmp_path: Path) -> None:
    path = tmp_path / "cache.pt"
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.full((2,), float(len(calls)))

    first = checkpoints.cached(path, {"weights": "a"}, compute)
    assert torch.equal(checkpoints.cached(path, {"weights": "a"}, compute), first) and len(calls) == 1
    assert torch.equal(checkpoints.cached(path, {"weights": "b"}, compute), torch.full((2,), 2.0)) and len(calls) == 2
    checkpoints.cached(None, {"weights": "b"}, compute)  # no file: always computed
    assert len(calls) == 3
