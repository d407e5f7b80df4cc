"""A training process killed mid-epoch by a real signal resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

# Trains a small network with dropout (so the RNG state matters) and a cosine schedule (so the
# scheduler state matters) for 3 epochs of 16 batches, then saves its weights to argv[2]. With a
# third argument, it creates that file in the middle of epoch 2 and waits there to be killed.
TRAINING = r"""
import sys, time
import torch
import torch.nn.functional as F
from torch import nn
from kdcourse.data import TensorBatches
from kdcourse.train import fit

checkpoint, weights = sys.argv[1], sys.argv[2]
# the test's instrumentation, in a dict: simple module globals a loss reads are part of the run's identity
probe = {"signal_file": sys.argv[3] if len(sys.argv) > 3 else None, "steps": 0}

def loss(logits, targets):
    probe["steps"] += 1
    if probe["signal_file"] and probe["steps"] == 16 + 5:
        open(probe["signal_file"], "w").close()
        time.sleep(120)
    return F.cross_entropy(logits, targets)

generator = torch.Generator().manual_seed(0)
x = torch.randn(512, 16, generator=generator)
y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
torch.manual_seed(1)
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 4))
fit(model, TensorBatches(x, y, batch_size=32, seed=3), loss, epochs=3, val_data=(x[:128], y[:128]), lr=3e-3,
    schedule="cosine", seed=5, checkpoint=checkpoint or None, progress=False)
torch.save(model.state_dict(), weights)
"""


def _train(*args: Path | str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDCOURSE_PROGRESS": "0"}
    process = subprocess.Popen([sys.executable, "-c", TRAINING, *map(str, args)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
    return process


def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    checkpoint, mid_epoch = tmp_path / "run.ckpt", tmp_path / "in-epoch-2"
    victim = _train(checkpoint, tmp_path / "never.pt", mid_epoch, wait=False)
    deadline = time.monotonic() + 300
    while not mid_epoch.exists():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the training process never reached epoch 2"
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert len(torch.load(checkpoint, weights_only=False)["result"]["history"]) == 1  # epoch 1 only

    _train(checkpoint, tmp_path / "resumed.pt")  # the lock died with the killed process
    _train("", tmp_path / "uninterrupted.pt")
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    uninterrupted = torch.load(tmp_path / "uninterrupted.pt", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
