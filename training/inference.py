"""SageMaker inference entry point (model.tar.gz: code/inference.py), for the PyTorch inference container.

SageMaker's inference toolkit calls model_fn once per worker, then input_fn -> predict_fn -> output_fn per
request; each may take the toolkit's optional `context` as a last argument. Errors from bad requests are
imgclf.imaging.InferenceRequestError, a sagemaker_inference BaseInferenceToolkitError, so the container
answers them with their 4xx status instead of a 500.

The logic lives in imgclf.serving (shared with the local server, so both answer identically); this file
only adapts the toolkit's call pattern. Nothing is downloaded: the model is rebuilt from metadata.json +
model.pt, and INFERENCE_RUNTIME / INFERENCE_THREADS choose the engine (see imgclf.runtimes).
"""

from __future__ import annotations

import logging
from typing import Any

# The container puts code/ (this file's folder, holding imgclf/) on sys.path before importing this module
# (sagemaker-pytorch-inference-toolkit's handler service); tests and local mode import imgclf through the
# editable install (pyproject package-dir). No path set-up here.
from imgclf import serving

logging.basicConfig(level=logging.INFO, format="%(message)s")


def _request_headers(context: Any) -> dict[str, Any]:
    """The current request's headers from the toolkit's context (MMS/TorchServe), {} without one."""
    try:
        return context.request_processor[0].get_request_properties() or {}
    except (AttributeError, IndexError, TypeError):
        return {}


def model_fn(model_dir: str, context: Any = None) -> serving.ServedModel:
    return serving.load_model(model_dir)


def input_fn(request_body: bytes, request_content_type: str, context: Any = None) -> Any:
    return serving.decode_input(request_body, request_content_type)


def predict_fn(input_data: Any, model: serving.ServedModel, context: Any = None) -> serving.Prediction:
    return serving.predict(input_data, model)


def output_fn(prediction: serving.Prediction, accept: str, context: Any = None) -> tuple[str, str]:
    custom_attributes = serving.header(_request_headers(context), serving.CUSTOM_ATTRIBUTES_HEADER)
    return serving.encode_output(prediction, accept, serving.top_k_from_request(custom_attributes))
