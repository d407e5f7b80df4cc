"""The ensemble teacher: mean logits of frozen members, and clear errors for what cannot be averaged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcourse.kd.ensemble import Ensemble, average_logits
from kdcourse.kd.hinton import HintonKD


def test_average_logits_of_cached_views():
    a, b = torch.randn(8, 5, 2), torch.randn(8, 5, 2)
    assert torch.allclose(average_logits([a, b]), (a + b) / 2)
    with pytest.raises(ValueError, match="one shape"):
        average_logits([a, torch.randn(8, 5, 3)])
    with pytest.raises(ValueError, match="at least one"):
        average_logits([])


def test_ensemble_is_a_frozen_teacher_that_a_method_can_distil_from():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)) for _ in range(3)]
    teacher = Ensemble(members)
    teacher.train()  # a fit loop may call train(); the teacher must stay deterministic
    x = torch.randn(6, 4)
    expected = torch.stack([m.eval()(x) for m in members]).mean(0)
    assert torch.allclose(teacher(x), expected)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student = nn.Linear(4, 3)
    loss = HintonKD(4.0, 0.5)(student(x), torch.tensor([0, 1, 2, 0, 1, 2]), teacher(x))
    loss.backward()
    assert student.weight.grad is not None and all(p.grad is None for p in teacher.parameters())
