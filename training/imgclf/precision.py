"""Numerics: `--precision auto|fp32|bf16`.

auto = bf16 autocast + channels_last where the hardware runs bf16 natively (a CPU with AMX or
AVX512-BF16, a GPU with bf16 support), else fp32. fp32 = full precision, default memory format (the
eager baseline). bf16 = bf16 autocast + channels_last even without native support (slow there).
The loss and the head of a frozen backbone run in fp32 either way: they cost nothing and keep the
optimisation exact.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """AMX tiles or AVX512-BF16: oneDNN then runs bf16 convolutions and matmuls natively."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # private helpers: a missing or failing one means "unknown", i.e. no
            continue
    return False


@dataclass(frozen=True)
class PrecisionPlan:
    requested: str
    dtype: torch.dtype | None  # autocast dtype, None = fp32
    channels_last: bool
    device_type: str
    reason: str

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def identity(self) -> str:
        return f"{self.dtype or 'fp32'}/{'channels_last' if self.channels_last else 'contiguous'}"

    def describe(self) -> str:
        return f"precision {self.requested}: {self.identity()} ({self.reason})"


def resolve_precision(requested: str, device: torch.device) -> PrecisionPlan:
    device_type = device.type
    if requested == "fp32":
        return PrecisionPlan(requested, None, False, device_type, "forced")
    native = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_supports_bf16()
    if requested == "bf16":
        return PrecisionPlan(requested, torch.bfloat16, True, device_type,
                             "native bf16" if native else "forced; this hardware emulates bf16 (slow)")
    if requested == "auto":
        if native:
            return PrecisionPlan(requested, torch.bfloat16, True, device_type, "native bf16 (AMX/AVX512-BF16/GPU)")
        return PrecisionPlan(requested, None, False, device_type, "no native bf16 here, fp32")
    raise ValueError(f"unknown precision {requested!r}")
