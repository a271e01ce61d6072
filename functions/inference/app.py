"""The public inference Lambda behind a Function URL: `POST /` with JPEG/PNG bytes -> top-k classes as JSON,
and `GET /`: the web page a person uses to try the model (imgclf_page, which POSTs back here).

Thin on purpose: parse and validate (inference_request, pure), invoke the endpoint (inference_endpoint),
shape the answer. The SageMaker client is built once per execution environment, at init, from:

  ENDPOINT_NAME                    the stable endpoint name the pipeline deploys (required)
  SAGEMAKER_RUNTIME_ENDPOINT_URL   send InvokeEndpoint elsewhere, e.g. local mode's server (optional)
  FUNCTION_TIMEOUT_SECONDS         the function's timeout; botocore's timeouts and retries fit inside it
  INVOKE_MAX_ATTEMPTS              attempts per request, retries included (default 2)
  PREDICTED_CLASS_METRIC           "true": the Predictions metric gets a predicted_class dimension

Every request leaves CloudWatch metrics in its log (embedded metric format through Powertools Metrics: no
PutMetricData call, no extra latency): names, units and dimensions from imgclf.prediction_metrics, the
module template.yaml's alarms and dashboard are checked against.

Imports stay light (botocore from the runtime, Powertools' logger, imgclf.contract from the layer):
no torch, numpy or PIL here.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from typing import Any

# Lambda puts this directory on sys.path; callers that load app.py from its file (tests, local mode's
# bridge) may not, and the sibling modules below must resolve the same way in both.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from aws_lambda_powertools import Logger, Metrics  # noqa: E402
from aws_lambda_powertools.metrics import single_metric  # noqa: E402
from inference_endpoint import Settings, invoke, make_runtime_client  # noqa: E402
from inference_request import (  # noqa: E402
    HttpError,
    error_response,
    http_response,
    is_page_request,
    page_response,
    parse_request,
)

from imgclf import prediction_metrics as pm  # noqa: E402

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "inference"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=pm.NAMESPACE, service=SERVICE)
SETTINGS = Settings.from_environ(os.environ)
RUNTIME = make_runtime_client(SETTINGS)
CLASS_DIMENSION = os.environ.get("PREDICTED_CLASS_METRIC", "").strip().lower() == "true"


def _record_status(status: int) -> None:
    metrics.add_metric(name=pm.CLIENT_ERROR.name, unit=pm.CLIENT_ERROR.unit, value=int(400 <= status < 500))
    metrics.add_metric(name=pm.SERVER_ERROR.name, unit=pm.SERVER_ERROR.unit, value=int(status >= 500))
    metrics.add_metadata("status_class", pm.status_class(status))


def _record_answer(answer: dict[str, Any], endpoint_ms: float) -> None:
    top1, entropy = pm.answer_statistics([p["probability"] for p in answer["predictions"]])
    best = answer["predictions"][0]
    metrics.add_metric(name=pm.TOP_PROBABILITY.name, unit=pm.TOP_PROBABILITY.unit, value=top1)
    metrics.add_metric(name=pm.ENTROPY.name, unit=pm.ENTROPY.unit, value=entropy)
    metrics.add_metric(name=pm.ENDPOINT_LATENCY.name, unit=pm.ENDPOINT_LATENCY.unit, value=endpoint_ms)
    metrics.add_metadata("predicted_class", best["label"])  # searchable in Logs Insights, no metric cost
    if CLASS_DIMENSION:
        # Cardinality is bounded whatever the model: class ids past the limit share one value.
        label = str(best["label"]) if best["class_id"] < pm.MAX_CLASS_DIMENSION_VALUES else "other"
        with single_metric(name=pm.PREDICTIONS.name, unit=pm.PREDICTIONS.unit, value=1, namespace=pm.NAMESPACE,
                           default_dimensions={pm.SERVICE_DIMENSION: SERVICE}) as metric:
            metric.add_dimension(name=pm.PREDICTED_CLASS_DIMENSION, value=label)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if is_page_request(event):
        return page_response()  # static: no endpoint call, nothing to log per request
    try:
        return _answer(event)
    finally:
        metrics.flush_metrics()  # one EMF line per request (the page above records nothing)


def _answer(event: dict[str, Any]) -> dict[str, Any]:
    try:
        request = parse_request(event)
        logger.append_keys(image_bytes=len(request.image), content_type=request.content_type, top_k=request.top_k)
        metrics.add_metric(name=pm.IMAGE_SIZE.name, unit=pm.IMAGE_SIZE.unit, value=len(request.image))
        started = time.perf_counter()
        # At least STATISTICS_TOP_K from the endpoint, so the statistics match the training baseline
        # whatever top_k the client wants; the client still gets its own top_k.
        answer = invoke(RUNTIME, SETTINGS.endpoint_name,
                        replace(request, top_k=max(request.top_k, pm.STATISTICS_TOP_K)))
    except HttpError as err:
        cause = err.__cause__
        # The client gets a short message; the log keeps the endpoint's own words for the operator.
        log = logger.warning if err.status < 500 else logger.error
        log(
            "request refused",
            extra={"status": err.status, "error": err.code, "cause": repr(cause)[:500] if cause else None},
        )
        _record_status(err.status)
        return error_response(err)
    except Exception:
        logger.exception("unexpected failure")
        _record_status(500)
        return error_response(HttpError(500, "internal_error", "internal error"))
    endpoint_ms = round((time.perf_counter() - started) * 1e3, 1)
    logger.info("answered", extra={"status": 200, "endpoint_ms": endpoint_ms, "runtime": answer["runtime"]})
    _record_status(200)
    _record_answer(answer, endpoint_ms)
    return http_response(200, {**answer, "predictions": answer["predictions"][: request.top_k]})
