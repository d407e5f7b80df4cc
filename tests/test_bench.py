"""The training-throughput benchmark runs and reports every configuration."""

from __future__ import annotations

import pytest

from kdcourse.course import bench


def test_benchmark_reports_positive_times_for_every_configuration() -> None:
    rows = bench.benchmark(stack_size=2, steps=1)
    assert [(r["model"], r["precision"], r["batch"], r["adam"]) for r in rows] == [
        ("teacher (CNN)", "fp32", 128, "for-each"),
        ("teacher (CNN)", "bf16 autocast", 128, "fused"),
        ("teacher, byte masks", "bf16 autocast", 128, "fused"),
        ("one student", "fp32", 128, "for-each"),
        ("one student", "bf16 autocast", 128, "for-each"),
        ("one student", "bf16 autocast", 256, "for-each"),
        ("one student", "bf16 autocast", 256, "fused"),
        ("2 stacked students", "bf16 autocast", 256, "fused"),
    ]
    assert all(r["seconds_per_epoch"] > 0 for r in rows)
    stacked = rows[-1]
    assert stacked["seconds_per_epoch_per_model"] * 2 == pytest.approx(stacked["seconds_per_epoch"], rel=0.01, abs=0.002)


def test_main_prints_a_table(capsys) -> None:
    assert bench.main(["--stack-size", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "s/epoch per model" in out and "stacked students" in out
