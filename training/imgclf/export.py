"""Export the trained classifier for fast CPU serving, and measure what each fast variant costs in accuracy.

Called once at the end of training (imgclf.artifacts), on rank 0:

    serving = export_for_serving(model, metadata, model_dir, validation_samples)

- writes model.onnx (fp32, dynamic batch) and model.int8.onnx (static int8 QDQ, calibrated on a few
  samples) into model_dir;
- runs every variant in imgclf.runtimes.VARIANTS that this machine can run on the validation samples and
  measures its top-1 agreement with eager fp32 torch (the reference) and its batch-1 latency;
- records all of it in metadata["serving"] (the caller writes metadata.json) and returns that dict.
  A variant is `eligible` only with agreement >= runtimes.MIN_TOP1_AGREEMENT; `default` is the fastest
  eligible one, or "torch" when none is.

Serving (imgclf.runtimes.select_runtime) trusts these records and never re-measures.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runtimes

LOGGER = logging.getLogger(__name__)

ONNX_OPSET = 17
EXPORT_BATCH_SIZE = 32
DEFAULT_MAX_VALIDATION_SAMPLES = 2000
CALIBRATION_SAMPLES = 64
LATENCY_RUNS = 20


def _as_batches(samples: Any) -> Iterator[np.ndarray]:
    """Float32 NCHW numpy batches from a tensor/array (N,C,H,W), or an iterable of tensors, arrays or
    (images, labels) pairs such as a DataLoader."""
    if samples is None:
        return
    if hasattr(samples, "shape") and len(samples.shape) == 4:
        samples = [samples]
    for item in samples:
        images = item[0] if isinstance(item, tuple | list) else item
        array = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        yield array.astype(np.float32, copy=False)


def collect_samples(samples: Any, limit: int) -> np.ndarray:
    """Up to `limit` images from `samples` (see _as_batches) as one float32 array."""
    chunks: list[np.ndarray] = []
    count = 0
    for batch in _as_batches(samples):
        chunks.append(batch[: limit - count])
        count += len(chunks[-1])
        if count >= limit:
            break
    if not chunks:
        return np.zeros((0, 0, 0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks))


def _run_batched(runtime: Any, images: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime(images[i:i + EXPORT_BATCH_SIZE])
                           for i in range(0, len(images), EXPORT_BATCH_SIZE)])


def _latency_ms(runtime: Any, image: np.ndarray, runs: int = LATENCY_RUNS) -> float:
    """Median batch-1 latency: what one request costs in the model."""
    for _ in range(3):
        runtime(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runtime(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def export_onnx(model: Any, path: Path, input_size: int) -> Path:
    """fp32 ONNX with a dynamic batch axis, named input/output (runtimes.ONNX_INPUT_NAME/OUTPUT_NAME)."""
    import onnx
    import torch

    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        # The TorchScript-based exporter: the torch.export-based one needs onnxscript, which neither this
        # project nor SageMaker's training containers install.
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=[runtimes.ONNX_INPUT_NAME], output_names=[runtimes.ONNX_OUTPUT_NAME],
            dynamic_axes={runtimes.ONNX_INPUT_NAME: {0: "batch"}, runtimes.ONNX_OUTPUT_NAME: {0: "batch"}},
        )
    onnx.checker.check_model(str(path))
    return path


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> Path:
    """Static int8 (QDQ: per-channel int8 weights, uint8 activations) calibrated on `calibration`.

    QDQ keeps the graph portable: ONNX Runtime runs it with its int8 kernels and OpenVINO turns the
    Q/DQ pairs into its own int8 execution, so both int8 variants read one file.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{runtimes.ONNX_INPUT_NAME: calibration[i:i + 1]}
                                  for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    prepared = int8_path.with_name(int8_path.stem + ".prep.onnx")
    # onnxruntime.quantization logs one INFO line per tensor on the root logger: hundreds of lines of
    # noise in the training log. Quiet it for the duration (export runs on rank 0, single-threaded).
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        # The fully connected layers (our head) stay fp32: they cost nothing next to the convolutions,
        # and quantising the logits' last layers is what flips near top-1 decisions (measured on a
        # trained resnet18: OpenVINO int8 agreement 98.0% -> 99.3% with the head in fp32).
        head_nodes = [node.name for node in onnx.load(str(prepared)).graph.node
                      if node.op_type in ("Gemm", "MatMul")]
        quantize_static(str(prepared), str(int8_path), _Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=head_nodes)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    return int8_path


def export_for_serving(model: Any, metadata: dict[str, Any], model_dir: str | Path,
                       validation_samples: Iterable[Any] | Any,
                       calibration_samples: Iterable[Any] | Any | None = None, *,
                       max_samples: int = DEFAULT_MAX_VALIDATION_SAMPLES,
                       threads: int | None = None) -> dict[str, Any]:
    """Export, measure and record the serving variants (see the module docstring). Never raises for a
    variant that fails: it is recorded as not eligible with the reason, and torch stays the fallback."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    input_size = int(metadata["input_size"])
    threads = threads or runtimes.default_threads()
    reference_model = copy.deepcopy(model).cpu().float().eval()
    images = collect_samples(validation_samples, max_samples)
    calibration = (images[:CALIBRATION_SAMPLES] if calibration_samples is None
                   else collect_samples(calibration_samples, CALIBRATION_SAMPLES))
    serving: dict[str, Any] = {
        "reference": runtimes.TORCH,
        "min_agreement": runtimes.MIN_TOP1_AGREEMENT,
        "validation_samples": len(images),
        "threads": threads,
        "onnx_opset": ONNX_OPSET,
        "variants": {},
        "default": runtimes.TORCH,
    }
    metadata["serving"] = serving
    probe = (images[:1] if len(images) else np.zeros((1, 3, input_size, input_size), np.float32))

    torch_runtime = runtimes.TorchRuntime(reference_model, threads)
    serving["torch_latency_ms"] = round(_latency_ms(torch_runtime, probe), 3)
    reference_top1 = _run_batched(torch_runtime, images).argmax(1) if len(images) else np.zeros(0, int)

    files: dict[str, str | None] = {}
    try:
        export_onnx(reference_model, model_dir / runtimes.ONNX_FP32_FILE, input_size)
        files[runtimes.ONNX_FP32_FILE] = None
    except Exception as error:
        LOGGER.warning("ONNX export failed: %s", error)
        files[runtimes.ONNX_FP32_FILE] = f"ONNX export failed: {error}"
    if files[runtimes.ONNX_FP32_FILE] is not None:
        files[runtimes.ONNX_INT8_FILE] = "no fp32 ONNX to quantise"
    elif not len(calibration):
        files[runtimes.ONNX_INT8_FILE] = "no calibration samples"
    else:
        try:
            quantize_int8(model_dir / runtimes.ONNX_FP32_FILE, model_dir / runtimes.ONNX_INT8_FILE,
                          calibration)
            files[runtimes.ONNX_INT8_FILE] = None
        except Exception as error:
            LOGGER.warning("int8 quantisation failed: %s", error)
            files[runtimes.ONNX_INT8_FILE] = f"int8 quantisation failed: {error}"

    for name, variant in runtimes.VARIANTS.items():
        record: dict[str, Any] = {"engine": variant.engine, "precision": variant.precision,
                                  "file": variant.onnx_file, "eligible": False}
        serving["variants"][name] = record
        reason = files.get(variant.onnx_file) or runtimes.unavailable_reason(variant, model_dir)
        if reason is None and not len(images):
            reason = "no validation samples to measure agreement on"
        if reason:
            record["skipped"] = reason
            continue
        try:
            runtime = runtimes.load_variant(variant, model_dir, threads)
            top1 = _run_batched(runtime, images).argmax(1)
            agreement = float((top1 == reference_top1).mean())
            record["agreement"] = round(agreement, 6)
            record["latency_ms"] = round(_latency_ms(runtime, probe), 3)
            record["eligible"] = agreement >= runtimes.MIN_TOP1_AGREEMENT
        except Exception as error:
            LOGGER.warning("variant %s failed: %s", name, error)
            record["skipped"] = f"failed: {error}"
    ranked = runtimes.ranked_candidates(serving)
    if ranked:
        serving["default"] = ranked[0]
    LOGGER.info("serving variants: %s; default %s",
                {n: (r.get("agreement"), r.get("latency_ms")) for n, r in serving["variants"].items()},
                serving["default"])
    return serving
