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


def test_fingerprints_follow_writes_that_do_not_bump_the_version_counter() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 2)
    before = checkpoints.module_fingerprint(layer)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)  # fit's default: updates in place, no version bump
    layer(torch.randn(8, 4)).square().sum().backward()
    optimizer.step()
    assert checkpoints.module_fingerprint(layer) != before
    x = torch.zeros(6)
    first = checkpoints.tensor_fingerprint(x)
    x.data[0] = 1.0
    second = checkpoints.tensor_fingerprint(x)
    x.numpy()[1] = 1.0
    assert len({first, second, checkpoints.tensor_fingerprint(x)}) == 3


def test_cached_teacher_logits_follow_the_teacher_after_fit(tmp_path: Path) -> None:
    from kdcourse.data.batches import TensorBatches
    from kdcourse.kd.teachers import teacher_logits
    from kdcourse.train import fit

    torch.manual_seed(0)
    teacher, x, y = nn.Linear(4, 3), torch.randn(32, 4), torch.randint(0, 3, (32,))
    cache = tmp_path / "teacher.pt"
    before = teacher_logits(teacher, x, cache=cache)
    fit(teacher, TensorBatches(x, y, batch_size=8), epochs=1, lr=0.1, progress=False)  # fused AdamW, no val_data
    after = teacher_logits(teacher, x, cache=cache)
    assert not torch.equal(after, before)
    with torch.no_grad():
        assert torch.allclose(after, teacher(x))


_FILL = """
import sys, time
from pathlib import Path
import torch
from kdcourse import checkpoints

folder, me = Path(sys.argv[1]), sys.argv[2]
for attempt in range(int(sys.argv[3])):
    (folder / f"ready{me}_{attempt}").touch()
    while not (folder / f"go{attempt}").exists():
        time.sleep(0.005)

    def compute() -> torch.Tensor:
        with open(folder / f"computed{attempt}.log", "a") as log:
            log.write(me + "\\n")
        return torch.arange(2_000_000, dtype=torch.float32)

    value = checkpoints.cached(folder / f"cache{attempt}.pt", {"inputs": "x"}, compute)
    assert torch.equal(value, torch.arange(2_000_000, dtype=torch.float32))
    for _ in range(3):  # both processes write one file at the same time
        checkpoints.save({"writer": me}, folder / f"shared{attempt}.pt")
"""


def test_two_processes_fill_one_cache_file(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    attempts = 4
    script = tmp_path / "fill.py"
    script.write_text(_FILL)
    processes = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i), str(attempts)],
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.monotonic() + 120
    for attempt in range(attempts):  # each attempt starts both processes together on a fresh cache file
        while not all((tmp_path / f"ready{i}_{attempt}").exists() for i in range(2)) and time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes):
                break
            time.sleep(0.005)
        (tmp_path / f"go{attempt}").touch()
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    for attempt in range(attempts):
        assert len((tmp_path / f"computed{attempt}.log").read_text().split()) == 1  # one computed, the other read it
        assert checkpoints.load(tmp_path / f"shared{attempt}.pt")["writer"] in {"0", "1"}
    assert not list(tmp_path.glob("*.tmp"))


def _flip_a_bit_of(path: Path, pattern: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(pattern) + len(pattern) // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_bits_is_refused(tmp_path: Path) -> None:
    weights = torch.arange(256, dtype=torch.float32)
    path = tmp_path / "run.ckpt"
    checkpoints.save({"model": {"weight": weights}, "epoch": 3}, path)
    assert torch.equal(torch.load(path, weights_only=True)["model"]["weight"], weights)  # still a plain torch file
    _flip_a_bit_of(path, weights.numpy().tobytes())
    with pytest.raises(checkpoints.CorruptCheckpointError, match=rf"{re.escape(str(path))} is damaged.*checksum.*Delete it"):
        checkpoints.load(path)


def test_a_checkpoint_without_a_checksum_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    torch.save({"model": {"weight": torch.ones(4)}}, path)  # written before checkpoints carried a checksum
    assert torch.equal(checkpoints.load(path)["model"]["weight"], torch.ones(4))
    assert torch.equal(checkpoints.load(path, weights_only=True)["model"]["weight"], torch.ones(4))
