"""Numerics: `--precision auto|fp32|bf16`.

auto = bf16 autocast + channels_last where the hardware runs bf16 natively (a CPU with AMX or
AVX512-BF16, a CUDA GPU of compute capability 8.0 or above), else fp32. fp32 = full precision, default
memory format (the eager baseline). bf16 = bf16 autocast + channels_last even without native support (slow there).
The loss and the head of a frozen backbone run in fp32 either way: they cost nothing and keep the
optimisation exact.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)


# Native bf16 on CUDA needs compute capability 8.0 (Ampere: A10G, A100, L4, H100, ...). Below it, e.g. the
# T4 (7.5) of ml.g4dn, torch.cuda.is_bf16_supported() still answers True: its default
# including_emulation=True counts bf16 tensors that work by emulation, while cuDNN has no bf16
# convolutions there. is_bf16_supported(including_emulation=False) is the same capability test (torch
# 2.13: `get_device_properties(device).major >= 8`); asking for the capability of *our* device keeps the
# decision a pure function of the facts (native_bf16) instead of the current device's.
MIN_NATIVE_BF16_CUDA_CAPABILITY = (8, 0)


def native_bf16(device_type: str, cuda_capability: tuple[int, int] | None = None,
                cpu_bf16: bool = False) -> bool:
    """Does this device run bf16 natively? Pure: from the device type, the CUDA compute capability
    (torch.cuda.get_device_capability) and whether the CPU has AMX/AVX512-BF16 (cpu_supports_bf16)."""
    if device_type == "cuda":
        return cuda_capability is not None and tuple(cuda_capability) >= MIN_NATIVE_BF16_CUDA_CAPABILITY
    if device_type == "cpu":
        return cpu_bf16
    return False


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
        layout = "channels_last" if self.channels_last else "contiguous"
        # A bf16 frozen backbone runs with BatchNorm folded (FrozenBackbone): part of the numerics.
        return f"{self.dtype}/{layout}/bn-folded" if self.dtype is not None else f"fp32/{layout}"

    def frozen_backbone(self, model: nn.Module) -> FrozenBackbone:
        return FrozenBackbone(model, self)

    def describe(self) -> str:
        return f"precision {self.requested}: {self.identity()} ({self.reason})"


def plan_precision(requested: str, device_type: str, cuda_capability: tuple[int, int] | None = None,
                   cpu_bf16: bool = False) -> PrecisionPlan:
    """The numerics for `requested` on a device described by its facts (pure; see native_bf16)."""
    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {requested!r}")
    if requested == "fp32":
        return PrecisionPlan(requested, None, False, device_type, "forced")
    native = native_bf16(device_type, cuda_capability, cpu_bf16)
    if device_type == "cuda":
        hardware = f"CUDA capability {cuda_capability[0]}.{cuda_capability[1]}" if cuda_capability else "CUDA"
    else:
        hardware = "AMX/AVX512-BF16" if cpu_bf16 else f"{device_type} without AMX/AVX512-BF16"
    if requested == "bf16":
        return PrecisionPlan(requested, torch.bfloat16, True, device_type,
                             f"native bf16 ({hardware})" if native
                             else f"forced; {hardware} emulates bf16 (slow)")
    if native:
        return PrecisionPlan(requested, torch.bfloat16, True, device_type, f"native bf16 ({hardware})")
    return PrecisionPlan(requested, None, False, device_type, f"no native bf16 on {hardware}, fp32")


def resolve_precision(requested: str, device: torch.device) -> PrecisionPlan:
    """plan_precision with the facts of `device`: its CUDA compute capability, or the CPU's bf16 support."""
    if device.type == "cuda":
        capability = tuple(torch.cuda.get_device_capability(device))
        return plan_precision(requested, "cuda", (int(capability[0]), int(capability[1])))
    return plan_precision(requested, device.type, cpu_bf16=device.type == "cpu" and cpu_supports_bf16())


class FrozenBackbone:
    """`forward_features` of a frozen backbone, as fast as the plan allows.

    With bf16: an inference-only copy with BatchNorm folded into the convolutions and the weights stored
    in bf16 (channels_last), fed bf16 input. Autocast would re-cast every weight on every call and run
    BatchNorm as a separate pass; this copy does neither (about 1.8x faster than autocast here). The
    trained, saved model is untouched. With fp32: the model itself, eager (the baseline)."""

    def __init__(self, model: nn.Module, plan: PrecisionPlan):
        from imgclf.models import fold_batchnorm

        self.plan = plan
        if plan.dtype is None:
            self.module = model
        else:
            clone = copy.deepcopy(model).eval()
            for p in clone.parameters():
                p.requires_grad_(False)
            self.module = fold_batchnorm(clone).to(plan.dtype)
            if plan.channels_last:
                self.module.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.plan.prepare_input(images)
        if self.plan.dtype is not None:
            x = x.to(self.plan.dtype)
        return self.module.forward_features(x).float()
