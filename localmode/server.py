"""A local real-time endpoint: SageMaker's inference-container protocol over real HTTP (uvicorn + Starlette).

    python -m localmode.server MODEL_DIR_OR_MODEL_TAR_GZ [--port 8080] [--workers 2] [--runtime auto]

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
bodies over contract.MAX_IMAGE_BYTES are refused with 413 before they are read. Several worker processes
(uvicorn's supervisor) each load the model and run one inference at a time with INFERENCE_THREADS threads
(default: the cores divided by the workers); a request that waits or runs longer than --timeout gets 504.
Logs are JSON lines. SIGTERM / SIGINT drain in-flight requests, then exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.config
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import imgclf_page
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imgclf import contract, runtimes, serving
from imgclf.imaging import InferenceRequestError, PayloadTooLargeError
from localmode import prediction_metrics
from localmode.prediction_metrics import PredictionMetrics
from localmode.uvicorn_setup import GRACEFUL_SHUTDOWN_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S, NoDelayH11Protocol, log_config

LOGGER = logging.getLogger("localmode.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 2
# SageMaker's own invocation timeout for real-time endpoints is 60 s.
DEFAULT_REQUEST_TIMEOUT_S = 60.0

# How the parent passes its settings to uvicorn's worker processes (which import create_app afresh).
_ENV_MODEL_DIR = "IMGCLF_SERVER_MODEL_DIR"
# Oversized bodies up to this size are read and dropped before the 413 (see _discard_rest); bigger ones
# are answered at once and the connection closed.
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
_ENV_TIMEOUT = "IMGCLF_SERVER_TIMEOUT_S"
_ENV_MAX_BODY = "IMGCLF_SERVER_MAX_BODY_BYTES"


# --------------------------------------------------------------------------------------------------
# The application (one per worker process).


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
        model_dir=Path(model_dir or os.environ[_ENV_MODEL_DIR]),
        request_timeout_s=float(request_timeout_s or os.environ.get(_ENV_TIMEOUT, DEFAULT_REQUEST_TIMEOUT_S)),
        max_body_bytes=int(max_body_bytes or os.environ.get(_ENV_MAX_BODY, contract.MAX_IMAGE_BYTES)),
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


# --------------------------------------------------------------------------------------------------
# Running it.


def _safe_extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        # "data" filter: no absolute paths, no `..`, no links out of the target, no device files.
        tar.extractall(target, filter="data")


@contextlib.contextmanager
def model_directory(model: str | os.PathLike[str]) -> Iterator[Path]:
    """A model directory from a directory or a model.tar.gz (extracted to a temporary dir, removed after)."""
    path = Path(model)
    if path.is_dir():
        yield path
        return
    if not path.is_file() or not tarfile.is_tarfile(path):
        raise FileNotFoundError(f"{path} is neither a model directory nor a model.tar.gz")
    target = Path(tempfile.mkdtemp(prefix="imgclf-model-"))
    try:
        _safe_extract(path, target)
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def serve(model: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          workers: int = DEFAULT_WORKERS, *, runtime: str | None = None, threads: int | None = None,
          request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
          max_body_bytes: int = contract.MAX_IMAGE_BYTES, log_level: str = "info") -> None:
    """Serve `model` (a model directory or model.tar.gz) until SIGTERM/SIGINT. Blocks."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    logging.config.dictConfig(log_config(log_level))
    with model_directory(model) as model_dir:
        # Load once here first: a broken artifact or an unusable --runtime fails now, with its reason,
        # instead of in every worker (which uvicorn's supervisor would restart over and over).
        serving.load_model(model_dir, runtime=runtime, threads=1)
        # Settings travel to the workers through the environment (uvicorn starts them afresh).
        os.environ[_ENV_MODEL_DIR] = str(model_dir)
        os.environ[_ENV_TIMEOUT] = str(request_timeout_s)
        os.environ[_ENV_MAX_BODY] = str(max_body_bytes)
        if workers > 1:
            # Each worker is a process: /metrics adds them up from this folder (prediction_metrics).
            os.environ[prediction_metrics.MULTIPROC_ENV] = tempfile.mkdtemp(prefix="imgclf-metrics-")
        if runtime:
            os.environ[runtimes.RUNTIME_ENV] = runtime
        if threads:
            os.environ[runtimes.THREADS_ENV] = str(threads)
        elif not os.environ.get(runtimes.THREADS_ENV):
            # A shared CPU: workers x threads never exceeds the cores (oversubscription costs latency).
            os.environ[runtimes.THREADS_ENV] = str(max(1, runtimes.default_threads() // workers))
        LOGGER.info(json.dumps({"event": "serve", "model": str(model), "host": host, "port": port,
                                "page": f"http://{host}:{port}/",
                                "workers": workers, "threads_per_worker": os.environ[runtimes.THREADS_ENV],
                                "runtime": os.environ.get(runtimes.RUNTIME_ENV, runtimes.AUTO)}))
        # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal it caught; with
        # these handlers that ends as a normal exit (code 0) and the extracted model.tar.gz is removed.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_cleanly)
        uvicorn.run(f"{__name__}:create_app", factory=True, host=host, port=port, workers=workers,
                    http=NoDelayH11Protocol,
                    log_config=log_config(log_level), access_log=False,
                    timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT_S)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None, prog: str = "python -m localmode.server") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model directory (metadata.json, model.pt, ...) or a model.tar.gz")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="worker processes")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"threads per worker ({runtimes.THREADS_ENV}; default cores / workers)")
    parser.add_argument("--runtime", choices=runtimes.RUNTIME_NAMES, default=None,
                        help=f"{runtimes.RUNTIME_ENV}: auto picks the fastest eligible exported runtime")
    parser.add_argument("--timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S,
                        help="seconds a request may wait + run before it gets 504")
    parser.add_argument("--max-body-bytes", type=int, default=contract.MAX_IMAGE_BYTES)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    serve(args.model, args.host, args.port, args.workers, runtime=args.runtime, threads=args.threads,
          request_timeout_s=args.timeout, max_body_bytes=args.max_body_bytes, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
