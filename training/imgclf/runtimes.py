"""The engines that run the classifier at serving time, and the choice between them.

A runtime maps a float32 NCHW batch (the eval transform's output) to float32 logits (N, num_classes).

- `torch`: eager fp32 PyTorch on model.pt, always available: the reference and the fallback.
- exported variants (imgclf.export writes them at the end of training and records, in
  metadata["serving"], each variant's top-1 agreement with `torch` on the validation split and its
  latency): ONNX Runtime and OpenVINO, in fp32, bf16 (OpenVINO, CPUs with native bf16) and int8
  (a statically quantised QDQ ONNX graph, which OpenVINO also runs as int8).

INFERENCE_RUNTIME picks one: `auto` (default) takes the fastest recorded variant whose agreement reached
the bar and that this machine can run, else `torch`; any other value names exactly one runtime and fails
loudly when it cannot be used. INFERENCE_THREADS sets the threads of one worker's runtime.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

LOGGER = logging.getLogger(__name__)

RUNTIME_ENV = "INFERENCE_RUNTIME"
THREADS_ENV = "INFERENCE_THREADS"
AUTO = "auto"
TORCH = "torch"
# An exported variant serves only when its top-1 agreement with eager fp32 torch on the validation split
# is at least this (the bar); measured at export time, recorded in metadata["serving"].
MIN_TOP1_AGREEMENT = 0.995

ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class Variant:
    """An exported way to run the model: engine + numeric precision + the ONNX file it reads."""

    name: str
    engine: str  # "onnxruntime" | "openvino"
    precision: str  # "fp32" | "bf16" | "int8"
    onnx_file: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("onnxruntime-fp32", "onnxruntime", "fp32", ONNX_FP32_FILE),
        Variant("openvino-fp32", "openvino", "fp32", ONNX_FP32_FILE),
        Variant("openvino-bf16", "openvino", "bf16", ONNX_FP32_FILE),
        Variant("onnxruntime-int8", "onnxruntime", "int8", ONNX_INT8_FILE),
        Variant("openvino-int8", "openvino", "int8", ONNX_INT8_FILE),
    )
}
RUNTIME_NAMES: tuple[str, ...] = (AUTO, TORCH, *VARIANTS)


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime cannot run here (library missing, CPU lacks the precision, not exported...)."""


class Runtime(Protocol):
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    """INFERENCE_THREADS, else every core this process may use."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        threads = int(value)
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be >= 1, got {value}")
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# The engines.


class TorchRuntime:
    """Eager fp32 PyTorch: the reference every exported variant is measured against."""

    name = TORCH

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = model.eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()


class OnnxRuntimeRuntime:
    def __init__(self, name: str, onnx_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # No spin-waiting between runs: a request spends part of its time in decoding and preprocessing,
        # and spinning intra-op threads would take the cores that work needs (measured: 3-7x slower
        # preprocessing next to a spinning session on a 2-core machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.name = name
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: np.ascontiguousarray(batch)})[0]


class OpenVinoRuntime:
    def __init__(self, name: str, onnx_path: Path, precision: str, threads: int | None = None) -> None:
        import openvino as ov

        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            # fp32 for the fp32 and int8 variants (int8 comes from the QDQ graph, not from this hint).
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            # OpenVINO pins its threads to cores by default, and every worker process picks the same
            # first cores: two single-threaded workers then share one core (measured: 4.5 -> 9.8 ms
            # per image each). The OS scheduler spreads unpinned workers over the cores.
            "ENABLE_CPU_PINNING": False,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.name = name
        self._compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        # One infer request per thread: a request is not safe to share between threads.
        self._local = threading.local()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({0: np.ascontiguousarray(batch)})
        return np.asarray(result[self._compiled.output(0)]).copy()


# --------------------------------------------------------------------------------------------------
# What this machine can run.


def unavailable_reason(variant: Variant, model_dir: Path | None = None) -> str | None:
    """Why `variant` cannot run on this machine (or from model_dir), or None when it can."""
    if model_dir is not None and not (Path(model_dir) / variant.onnx_file).is_file():
        return f"{variant.onnx_file} is not in the model directory"
    try:
        if variant.engine == "onnxruntime":
            import onnxruntime  # noqa: F401
        elif variant.engine == "openvino":
            import openvino as ov

            if variant.precision == "bf16" and "BF16" not in ov.Core().get_property(
                    "CPU", "OPTIMIZATION_CAPABILITIES"):
                return "this CPU has no native bf16 (OpenVINO would silently compute in fp32)"
    except ImportError as error:
        return f"{variant.engine} is not installed ({error})"
    return None


def load_variant(variant: Variant, model_dir: Path, threads: int | None = None) -> Runtime:
    reason = unavailable_reason(variant, model_dir)
    if reason:
        raise RuntimeUnavailableError(f"runtime {variant.name} cannot run here: {reason}")
    path = Path(model_dir) / variant.onnx_file
    if variant.engine == "onnxruntime":
        return OnnxRuntimeRuntime(variant.name, path, threads)
    return OpenVinoRuntime(variant.name, path, variant.precision, threads)


def ranked_candidates(serving: dict[str, Any] | None) -> list[str]:
    """Eligible variants recorded at export (agreement >= the bar), fastest first."""
    variants = (serving or {}).get("variants", {})
    eligible = [
        (float(info.get("latency_ms") or float("inf")), name)
        for name, info in variants.items()
        if name in VARIANTS and info.get("eligible")
        and float(info.get("agreement", 0.0)) >= MIN_TOP1_AGREEMENT
    ]
    return [name for _, name in sorted(eligible)]


def select_runtime(model_dir: Path, metadata: dict[str, Any], torch_model: Callable[[], Any],
                   requested: str | None = None, threads: int | None = None) -> Runtime:
    """The runtime INFERENCE_RUNTIME (or `requested`) asks for; see the module docstring for the rules.

    `torch_model` builds the eager fp32 model; it is called only when torch serves.
    """
    requested = (requested or os.environ.get(RUNTIME_ENV) or AUTO).strip().lower()
    threads = threads or default_threads()
    serving = metadata.get("serving") or {}
    if requested not in RUNTIME_NAMES:
        raise RuntimeUnavailableError(
            f"{RUNTIME_ENV}={requested!r} is not a runtime; choose one of {', '.join(RUNTIME_NAMES)}")
    if requested == TORCH:
        return TorchRuntime(torch_model(), threads)
    if requested != AUTO:
        info = serving.get("variants", {}).get(requested)
        if info is None:
            raise RuntimeUnavailableError(f"runtime {requested} was not exported for this model")
        agreement = float(info.get("agreement", 0.0))
        if not info.get("eligible") or agreement < MIN_TOP1_AGREEMENT:
            raise RuntimeUnavailableError(
                f"runtime {requested} agrees with fp32 torch on {agreement:.2%} of the "
                f"validation split, under the {MIN_TOP1_AGREEMENT:.1%} bar: it does not serve this model")
        return load_variant(VARIANTS[requested], model_dir, threads)
    for name in ranked_candidates(serving):
        reason = unavailable_reason(VARIANTS[name], model_dir)
        if reason:
            LOGGER.info("runtime %s skipped: %s", name, reason)
            continue
        try:
            return load_variant(VARIANTS[name], model_dir, threads)
        except Exception as error:  # a broken install must not take the endpoint down: try the next one
            LOGGER.warning("runtime %s failed to load (%s); trying the next one", name, error)
    LOGGER.info("no exported runtime is eligible and available: serving eager fp32 torch")
    return TorchRuntime(torch_model(), threads)
