"""--precision auto: bf16 only where the device runs it natively, decided from the device's facts."""

from __future__ import annotations

import pytest
import torch

from imgclf import precision


@pytest.mark.parametrize(("capability", "dtype"), [
    ((7, 5), None),  # T4 (ml.g4dn): emulated bf16 only, cuDNN has no bf16 convolutions below 8.0
    ((7, 0), None),  # V100 (ml.p3)
    ((8, 0), torch.bfloat16),  # A100 (ml.p4d)
    ((8, 6), torch.bfloat16),  # A10G (ml.g5)
    ((8, 9), torch.bfloat16),  # L4 (ml.g6)
    ((9, 0), torch.bfloat16),  # H100 / H200 (ml.p5)
])
def test_cuda_auto_uses_bf16_from_capability_8_0(capability: tuple[int, int], dtype: torch.dtype | None) -> None:
    plan = precision.plan_precision("auto", "cuda", capability)
    assert plan.dtype == dtype
    assert plan.channels_last == (dtype is not None)
    assert f"CUDA capability {capability[0]}.{capability[1]}" in plan.reason


@pytest.mark.parametrize(("cpu_bf16", "dtype"), [(True, torch.bfloat16), (False, None)])
def test_cpu_auto_follows_amx_or_avx512_bf16(cpu_bf16: bool, dtype: torch.dtype | None) -> None:
    assert precision.plan_precision("auto", "cpu", cpu_bf16=cpu_bf16).dtype == dtype


def test_forced_choices_and_bad_input() -> None:
    assert precision.plan_precision("fp32", "cuda", (9, 0)).dtype is None
    forced = precision.plan_precision("bf16", "cuda", (7, 5))
    assert forced.dtype == torch.bfloat16 and "emulates bf16" in forced.reason
    assert precision.plan_precision("bf16", "cuda", (9, 0)).reason.startswith("native bf16")
    assert not precision.native_bf16("mps", None)
    with pytest.raises(ValueError, match="fp16"):
        precision.plan_precision("fp16", "cpu")


def test_resolve_reads_the_capability_not_the_emulating_is_bf16_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a T4, torch.cuda.is_bf16_supported() answers True (including_emulation defaults to True): the
    plan must come from the device's compute capability instead."""
    asked: list[object] = []

    def capability(device: object = None) -> tuple[int, int]:
        asked.append(device)
        return (7, 5)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    device = torch.device("cuda", 1)
    plan = precision.resolve_precision("auto", device)
    assert plan.dtype is None and plan.device_type == "cuda"
    assert asked == [device]  # the capability of the device we train on, not the current one
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert precision.resolve_precision("auto", device).dtype == torch.bfloat16


def test_resolve_on_cpu_keeps_the_run_time_amx_avx512_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.resolve_precision("auto", torch.device("cpu")).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert precision.resolve_precision("auto", torch.device("cpu")).dtype is None
