"""The one precision decision: bf16 autocast exactly where the hardware has it natively."""

from __future__ import annotations

import pytest
import torch

from kdcourse import hardware

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})  # e.g. an AMD EPYC of the Zen 2/3 generations
AMX = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}  # e.g. a Xeon of the Sapphire Rapids generation


@pytest.fixture(autouse=True)
def _auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hardware.PRECISION_ENV, raising=False)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(AVX2_ONLY, None), (AMX, torch.bfloat16), (AVX2_ONLY | {"avx512_bf16"}, torch.bfloat16), (frozenset(), None)],
)
def test_cpu_precision_follows_native_bf16(flags: frozenset[str], expected: torch.dtype | None) -> None:
    assert hardware.native_bf16("cpu", flags) is (expected is not None)
    assert hardware.autocast_dtype("cpu", flags=flags) is expected


def test_studies_configured_without_mixed_precision_stay_float32() -> None:
    assert hardware.autocast_dtype("cpu", allowed=False, flags=AMX) is None


@pytest.mark.parametrize(("setting", "expected"), [("fp32", None), ("bf16", torch.bfloat16), ("auto", None), ("", None)])
def test_the_environment_overrides_the_choice(monkeypatch: pytest.MonkeyPatch, setting: str, expected: torch.dtype | None) -> None:
    monkeypatch.setenv(hardware.PRECISION_ENV, setting)
    assert hardware.autocast_dtype("cpu", flags=AVX2_ONLY) is expected
    if setting == "fp32":
        assert hardware.autocast_dtype("cpu", flags=AMX) is None


def test_an_unknown_precision_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hardware.PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=r"KDCOURSE_PRECISION='fp16'.*auto, bf16, fp32"):
        hardware.autocast_dtype("cpu")


def test_cuda_asks_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert hardware.autocast_dtype("cuda") is None  # e.g. a V100: no bf16, float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert hardware.autocast_dtype("cuda") is torch.bfloat16


def test_the_flags_of_this_machine_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hardware.PRECISION_ENV, raising=False)
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset)
    summary = hardware.precision_summary("cpu")
    expected = "(native bf16 on this device)" if hardware.native_bf16("cpu") else "(no native bf16 on this device"
    assert summary.startswith("precision: ") and expected in summary, summary


def test_no_study_fixes_its_own_precision() -> None:
    """Every study asks hardware.autocast_dtype; none names bfloat16 itself."""
    from pathlib import Path

    import kdcourse

    package = Path(kdcourse.__file__).parent
    for module in (package / "studies").glob("*.py"):
        text = module.read_text()
        assert "torch.bfloat16" not in text, f"{module.name} fixes bfloat16 instead of asking kdcourse.hardware"
        if "amp_dtype" in text:
            assert "hardware.autocast_dtype(" in text, module.name
