"""The local endpoint's HTTP application (Starlette, one per uvicorn worker process): SageMaker's
inference-container protocol. localmode.server runs it (`python -m localmode.server`).

- `GET /`: the web page to try the model in a browser (imgclf_page, the same file and headers as the
  inference Function URL's); it POSTs the photo to `POST /`, which is `POST /invocations`.
- `GET /ping`: 200 once this worker's model is loaded (503 before), like SageMaker's health check.
- `GET /metrics`: the prediction statistics the inference Lambda sends to CloudWatch (top-1 probability,
  entropy, status class, latency, image size) and the model's validation baseline, in Prometheus' text
  format (localmode/prediction_metrics.py), summed over the workers.
- `POST /invocations`: image bytes in (image/jpeg, image/png, application/x-image,
  application/octet-stream), the JSON answer out; what SageMaker sends to a container.
- `POST /endpoints/{name}/invocations`: the runtime API path boto3's sagemaker-runtime client calls, so
  `boto3.client("sagemaker-runtime", endpoint_url="http://127.0.0.1:8080").invoke_endpoint(...)` works
  (the inference Lambda does that when SAGEMAKER_RUNTIME_ENDPOINT_URL is set). Any endpoint name is
  accepted: this server is one endpoint.
- top_k: CustomAttributes `top_k=<n>` (header X-Amzn-SageMaker-Custom-Attributes, as on SageMaker) or
  the query parameter `?top_k=<n>` (wins when both are given); default contract.DEFAULT_TOP_K.

The request handling is imgclf.serving, the same code as SageMaker's container runs (training/inference.py),
so both answer identically. Bad requests get their 4xx (imgclf.imaging) and the worker carries on;
bodies over contract.MAX_IMAGE_BYTES are refused with 413 before they are read, and a request that waits
or runs longer than the server's --timeout gets 504.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import imgclf_page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imgclf import contract, serving
from imgclf.imaging import InferenceRequestError, PayloadTooLargeError
from localmode import prediction_metrics
from localmode.prediction_metrics import PredictionMetrics

LOGGER = logging.getLogger("localmode.server")

# SageMaker's own invocation timeout for real-time endpoints is 60 s.
DEFAULT_REQUEST_TIMEOUT_S = 60.0

# How localmode.server passes its settings to uvicorn's worker processes (which import create_app afresh).
ENV_MODEL_DIR = "IMGCLF_SERVER_MODEL_DIR"
ENV_TIMEOUT = "IMGCLF_SERVER_TIMEOUT_S"
ENV_MAX_BODY = "IMGCLF_SERVER_MAX_BODY_BYTES"
# Oversized bodies up to this size are read and dropped before the 413 (see _discard_rest); bigger ones
# are answered at once and the connection closed.
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass
class _State:
    model_dir: Path
    request_timeout_s: float
    max_body_bytes: int
    model: serving.ServedModel | None = None
    metrics: PredictionMetrics | None = None
    # One inference at a time per worker: the runtime already uses all of this worker's threads.
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))


def _error(status: int, message: str, request_id: str, runtime_api: bool) -> JSONResponse:
    """The error answer. On the container path (/invocations) the status is the error's own. On the
    runtime API path (/endpoints/{name}/invocations) it is what SageMaker's InvokeEndpoint answers when the
    container fails: ModelError (HTTP 424) carrying the container's status and message, which botocore
    raises as `client.exceptions.ModelError` with OriginalStatusCode, as in AWS."""
    if not runtime_api:
        return JSONResponse({"error": message, "status": status, "request_id": request_id},
                            status_code=status)
    source = "client" if status < 500 else "server"
    return JSONResponse(
        {"ErrorCode": f"{source.upper()}_ERROR_FROM_MODEL", "OriginalStatusCode": status,
         "OriginalMessage": message,
         "Message": f'Received {source} error ({status}) from primary with message "{message}".'},
        status_code=424, headers={"x-amzn-ErrorType": "ModelError", "x-amzn-RequestId": request_id})


async def _discard_rest(request: Request) -> None:
    """Read and drop what is left of an oversized body (up to _DRAIN_LIMIT_BYTES): a server that answers
    while the client is still sending closes a socket with unread data, and the client then sees a
    connection reset instead of the 413."""
    drained = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > _DRAIN_LIMIT_BYTES:
                break


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes without keeping it in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= _DRAIN_LIMIT_BYTES:
            await _discard_rest(request)
        raise PayloadTooLargeError(f"the request body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _discard_rest(request)
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(model_dir: str | os.PathLike[str] | None = None, *, request_timeout_s: float | None = None,
               max_body_bytes: int | None = None) -> Starlette:
    """The Starlette app; arguments default to the settings `serve` put in the environment (workers)."""
    state = _State(
        model_dir=Path(model_dir or os.environ[ENV_MODEL_DIR]),
        request_timeout_s=float(request_timeout_s or os.environ.get(ENV_TIMEOUT, DEFAULT_REQUEST_TIMEOUT_S)),
        max_body_bytes=int(max_body_bytes or os.environ.get(ENV_MAX_BODY, contract.MAX_IMAGE_BYTES)),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Loaded before uvicorn accepts connections in this worker, so /ping never lies.
        state.model = await anyio.to_thread.run_sync(serving.load_model, state.model_dir)
        state.metrics = PredictionMetrics(state.model.metadata)
        yield

    async def page(request: Request) -> Response:
        return Response(imgclf_page.HTML, headers=imgclf_page.HEADERS)

    async def ping(request: Request) -> Response:
        if state.model is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "healthy", "runtime": state.model.runtime_name})

    async def metrics(request: Request) -> Response:
        if state.metrics is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return Response(state.metrics.exposition(), media_type=prediction_metrics.CONTENT_TYPE)

    async def invocations(request: Request) -> Response:
        request_id = request.headers.get("x-amzn-requestid") or uuid.uuid4().hex
        start = time.perf_counter()
        runtime_api = "endpoint_name" in request.path_params
        status, size, error_message, text = 200, 0, None, None
        try:
            if state.model is None:
                status, error_message = 503, "the model is still loading"
                return _error(status, error_message, request_id, runtime_api)
            body = await _read_body(request, state.max_body_bytes)
            size = len(body)
            model = state.model
            with anyio.fail_after(state.request_timeout_s):
                text, content_type = await anyio.to_thread.run_sync(
                    lambda: serving.invoke(
                        model, body, request.headers.get("content-type"), request.headers.get("accept"),
                        request.headers.get(serving.CUSTOM_ATTRIBUTES_HEADER),
                        request.query_params.get(contract.TOP_K_ATTRIBUTE)),
                    limiter=state.limiter, abandon_on_cancel=True)
            return Response(text, media_type=content_type,
                            headers={"X-Inference-Runtime": model.runtime_name, "X-Request-Id": request_id})
        except InferenceRequestError as error:
            status, error_message = error.status_code, error.message
            return _error(status, error_message, request_id, runtime_api)
        except TimeoutError:
            status, error_message = 504, f"inference took longer than {state.request_timeout_s:g} s"
            return _error(status, error_message, request_id, runtime_api)
        except Exception as error:  # the worker must survive anything a request does
            LOGGER.exception(json.dumps({"event": "invocation_failed", "request_id": request_id}))
            status, error_message = 500, f"internal error: {type(error).__name__}"
            return _error(status, error_message, request_id, runtime_api)
        finally:
            if state.metrics is not None:
                state.metrics.record(status, size, (time.perf_counter() - start) * 1000, text)
            LOGGER.info(json.dumps({
                "event": "invocation", "request_id": request_id, "path": request.url.path, "status": status,
                "bytes": size, "ms": round((time.perf_counter() - start) * 1000, 2),
                "runtime": state.model.runtime_name if state.model else None,
                **({"error": error_message} if error_message else {}),
            }))

    return Starlette(routes=[
        Route("/", page, methods=["GET"]),
        Route("/", invocations, methods=["POST"]),  # where the page posts (as it does to the Function URL)
        Route("/ping", ping, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),  # Prometheus text format (prediction_metrics)
        Route("/invocations", invocations, methods=["POST"]),
        Route("/endpoints/{endpoint_name}/invocations", invocations, methods=["POST"]),
    ], lifespan=lifespan)
