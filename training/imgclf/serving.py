"""The inference handler's logic, shared by SageMaker's container (training/inference.py) and our own HTTP
server (localmode.server): one implementation, so both answer a request identically.

    model = load_model(model_dir)                         # model_fn
    image = decode_input(body, content_type)              # input_fn  (4xx on bad input, imgclf.imaging)
    prediction = predict(image, model)                    # predict_fn (the eval transform + the runtime)
    body, content_type = encode_output(prediction, accept, top_k)   # output_fn

The answer (interface 5): {"predictions": [{"label", "class_id", "probability"}, ...], "runtime": name},
sorted by probability, top_k predictions (contract.DEFAULT_TOP_K unless the request asks: SageMaker
CustomAttributes "top_k=<n>", or `?top_k=<n>` on the local server).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgclf import contract, imaging, presets, runtimes
from imgclf.imaging import InferenceRequestError

LOGGER = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# SageMaker's model server tells us how many workers share the instance: split the cores between them.
SAGEMAKER_WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"


class NotAcceptableError(InferenceRequestError):
    """406: the client accepts no media type we produce (we produce application/json)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 406)


@dataclass
class ServedModel:
    """What model_fn returns: the runtime plus everything needed to turn an image into an answer."""

    model_dir: Path
    metadata: dict[str, Any]
    class_names: list[str]
    transform: presets.EvalTransform
    runtime: runtimes.Runtime
    load_seconds: float = 0.0
    # torch's intra-op threads while this model preprocesses and predicts: the runtime's threads when
    # torch runs the model; 1 otherwise, since the eval transform's few tensor ops gain nothing from
    # more and torch's OpenMP threads then fight the ONNX Runtime / OpenVINO threads for the cores
    # (measured: preprocessing 1 ms -> 26 ms on a busy 2-core machine).
    torch_threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime_name(self) -> str:
        return self.runtime.name


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # (num_classes,) float64, sums to 1
    class_names: list[str]
    runtime: str


def _threads_per_worker() -> int | None:
    if os.environ.get(runtimes.THREADS_ENV):
        return runtimes.default_threads()
    workers = os.environ.get(SAGEMAKER_WORKERS_ENV, "").strip()
    if workers.isdigit() and int(workers) > 0:
        return max(1, runtimes.default_threads() // int(workers))
    return None


def load_model(model_dir: str | os.PathLike[str], runtime: str | None = None,
               threads: int | None = None) -> ServedModel:
    """Load a model artifact directory (metadata.json + model.pt + optional ONNX exports) for serving.

    Never downloads anything: the architecture comes from metadata.json, the weights from model.pt.
    `runtime` overrides INFERENCE_RUNTIME, `threads` overrides INFERENCE_THREADS.
    """
    from imgclf import models

    start = time.perf_counter()
    model_dir = Path(model_dir)
    metadata_path = model_dir / "metadata.json"
    if not metadata_path.is_file():
        raise FileNotFoundError(f"{metadata_path} is missing: not a model artifact directory")
    metadata = json.loads(metadata_path.read_text())
    class_names = [str(name) for name in metadata["class_names"]]
    if len(class_names) != int(metadata["num_classes"]):
        raise ValueError(
            f"metadata.json lists {len(class_names)} class names for {metadata['num_classes']} classes")

    def torch_model() -> Any:
        return models.load_trained_model(model_dir)[0]

    threads = threads or _threads_per_worker() or runtimes.default_threads()
    selected = runtimes.select_runtime(model_dir, metadata, torch_model, requested=runtime, threads=threads)
    served = ServedModel(model_dir=model_dir, metadata=metadata, class_names=class_names,
                         transform=presets.eval_transform_for(metadata), runtime=selected,
                         torch_threads=threads if selected.name == runtimes.TORCH else 1)
    # Warm-up: the first call of every engine allocates and compiles; pay for it before /ping says ready.
    size = served.transform.preprocessing.input_size
    _use_torch_threads(served.torch_threads)
    probabilities(served, np.zeros((1, 3, size, size), dtype=np.float32))
    served.load_seconds = time.perf_counter() - start
    LOGGER.info(json.dumps({"event": "model_loaded", "model_dir": str(model_dir),
                            "runtime": served.runtime_name, "num_classes": len(class_names),
                            "seconds": round(served.load_seconds, 3), "pid": os.getpid()}))
    return served


def decode_input(body: bytes | bytearray | memoryview | None, content_type: str | None) -> Image.Image:
    """input_fn: request bytes -> upright RGB image; InferenceRequestError (4xx) for anything else."""
    return imaging.decode_request(body, content_type)


def preprocess(model: ServedModel, image: Image.Image) -> np.ndarray:
    """The training eval transform (imgclf.presets), as a float32 batch of one."""
    return model.transform(image).numpy()[None]


def probabilities(model: ServedModel, batch: np.ndarray) -> np.ndarray:
    """Softmax over the runtime's logits, in float64 (the runtimes' logits may be bf16-rounded)."""
    logits = np.asarray(model.runtime(batch), dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def _use_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:  # process-wide; changed only when another model ran last
        torch.set_num_threads(threads)


def predict(image: Image.Image, model: ServedModel) -> Prediction:
    """predict_fn: preprocessing + the runtime + softmax, for one image."""
    _use_torch_threads(model.torch_threads)
    return Prediction(probabilities(model, preprocess(model, image))[0], model.class_names,
                      model.runtime_name)


def check_accept(accept: str | None) -> None:
    """406 unless the client accepts application/json (a missing Accept or */* accepts anything)."""
    if not accept:
        return
    for item in accept.split(","):
        media = imaging.normalize_content_type(item)
        if media in ("", "*/*", "application/*", contract.JSON_CONTENT_TYPE):
            return
    raise NotAcceptableError(
        f"Accept {accept!r:.80}: this endpoint answers {contract.JSON_CONTENT_TYPE} only")


def top_k_from_request(custom_attributes: str | None = None, query_value: str | None = None) -> int:
    """The requested top_k (query parameter first, then CustomAttributes), default contract.DEFAULT_TOP_K.
    An invalid value is the client's error: 400."""
    try:
        if query_value is not None:
            return contract.parse_top_k(query_value)
        requested = contract.top_k_from_custom_attributes(custom_attributes)
    except ValueError as error:
        raise InferenceRequestError(str(error), 400) from error
    return contract.DEFAULT_TOP_K if requested is None else requested


def answer(prediction: Prediction, top_k: int = contract.DEFAULT_TOP_K) -> dict[str, Any]:
    """The JSON answer (interface 5): the top_k classes by probability, highest first."""
    k = min(top_k, len(prediction.probabilities))
    # Stable sort on the negated probabilities: ties keep class-id order, so answers are deterministic.
    order = np.argsort(-prediction.probabilities, kind="stable")[:k]
    return {
        "predictions": [
            {"label": prediction.class_names[i], "class_id": int(i),
             "probability": round(float(prediction.probabilities[i]), 6)}
            for i in order
        ],
        "runtime": prediction.runtime,
    }


def encode_output(prediction: Prediction, accept: str | None,
                  top_k: int = contract.DEFAULT_TOP_K) -> tuple[str, str]:
    """output_fn: (JSON text, content type)."""
    check_accept(accept)
    return json.dumps(answer(prediction, top_k)), contract.JSON_CONTENT_TYPE


def header(headers: Any, name: str) -> str | None:
    """A header from any mapping, whatever the case of its keys (SageMaker's model servers vary)."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in dict(headers).items():
        key_text = key.decode() if isinstance(key, bytes) else str(key)
        if key_text.lower() == wanted:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def invoke(model: ServedModel, body: bytes, content_type: str | None, accept: str | None = None,
           custom_attributes: str | None = None, top_k_query: str | None = None) -> tuple[str, str]:
    """One request through the four handler steps (what the local server calls)."""
    top_k = top_k_from_request(custom_attributes, top_k_query)
    check_accept(accept)
    image = decode_input(body, content_type)
    return encode_output(predict(image, model), accept, top_k)
