"""The public inference Lambda behind a Function URL: `POST /` with JPEG/PNG bytes -> top-k classes as JSON,
and `GET /`: the web page a person uses to try the model (imgclf_page, which POSTs back here).

Thin on purpose: parse and validate (imgclf_lambda.request, pure), invoke the endpoint
(imgclf_lambda.endpoint), shape the answer. The SageMaker client is built once per execution environment, at init, from:

  ENDPOINT_NAME                    the stable endpoint name the pipeline deploys (required)
  SAGEMAKER_RUNTIME_ENDPOINT_URL   send InvokeEndpoint elsewhere, e.g. local mode's server (optional)
  FUNCTION_TIMEOUT_SECONDS         the function's timeout; botocore's timeouts and retries fit inside it
  INVOKE_MAX_ATTEMPTS              attempts per request, retries included (default 2)
  POWERTOOLS_SERVICE_NAME          the `service` dimension of its metrics (the template: the endpoint name)
  PREDICTED_CLASS_METRIC           "Enabled": also count answers per predicted class

Every prediction request emits CloudWatch metrics as EMF log lines (imgclf_lambda.prediction_metrics, names
from imgclf.monitoring): status class, image size, endpoint latency, top-1 probability and entropy.

Imports stay light (botocore from the runtime, Powertools' logger, imgclf.contract from the layer):
no torch, numpy or PIL here.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger
from imgclf_lambda import prediction_metrics
from imgclf_lambda.endpoint import Settings, invoke, make_runtime_client
from imgclf_lambda.request import (
    HttpError,
    error_response,
    http_response,
    is_page_request,
    page_response,
    parse_request,
)

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "inference"
logger = Logger(service=SERVICE)
metrics = prediction_metrics.make_metrics(SERVICE)
CLASS_METRIC = prediction_metrics.class_metric_enabled(os.environ)
SETTINGS = Settings.from_environ(os.environ)
RUNTIME = make_runtime_client(SETTINGS)


@metrics.log_metrics(raise_on_empty_metrics=False)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if is_page_request(event):
        return page_response()  # static: no endpoint call, nothing to log or count per request
    outcome = prediction_metrics.Outcome(status=500)
    try:
        response, outcome = _predict(event)
        return response
    finally:
        # Counted however the request ended, so the error-rate alarms see every request.
        prediction_metrics.record(metrics, outcome, service=SERVICE, class_metric=CLASS_METRIC)


def _predict(event: dict[str, Any]) -> tuple[dict[str, Any], prediction_metrics.Outcome]:
    """The Function URL response and what the request came to, for its metrics."""
    image_bytes = None
    try:
        request = parse_request(event)
        image_bytes = len(request.image)
        logger.append_keys(image_bytes=len(request.image), content_type=request.content_type, top_k=request.top_k)
        started = time.perf_counter()
        answer = invoke(RUNTIME, SETTINGS.endpoint_name, request)
    except HttpError as err:
        cause = err.__cause__
        # The client gets a short message; the log keeps the endpoint's own words for the operator.
        log = logger.warning if err.status < 500 else logger.error
        log(
            "request refused",
            extra={"status": err.status, "error": err.code, "cause": repr(cause)[:500] if cause else None},
        )
        return error_response(err), prediction_metrics.Outcome(err.status, image_bytes)
    except Exception:
        logger.exception("unexpected failure")
        failure = HttpError(500, "internal_error", "internal error")
        return error_response(failure), prediction_metrics.Outcome(500, image_bytes)
    endpoint_ms = round((time.perf_counter() - started) * 1e3, 1)
    logger.info("answered", extra={"status": 200, "endpoint_ms": endpoint_ms, "runtime": answer["runtime"]})
    outcome = prediction_metrics.Outcome(200, image_bytes, endpoint_ms, answer["predictions"])
    return http_response(200, answer), outcome
