"""A local real-time endpoint: SageMaker's inference-container protocol over real HTTP (uvicorn + Starlette).

`serve` runs the app (localmode.app: its routes and answers) under uvicorn (localmode.uvicorn_setup);
`main` is its command line.

    python -m localmode.server MODEL_DIR_OR_MODEL_TAR_GZ [--port 8080] [--workers 2] [--runtime auto]

Several worker processes (uvicorn's supervisor) each load the model and run one inference at a time with
INFERENCE_THREADS threads (default: the cores divided by the workers); a request that waits or runs longer
than --timeout gets 504. Logs are JSON lines. SIGTERM / SIGINT drain in-flight requests, then exit.
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
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from imgclf import contract, runtimes, serving
from localmode import app, prediction_metrics
from localmode.uvicorn_setup import GRACEFUL_SHUTDOWN_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S, NoDelayH11Protocol, log_config

LOGGER = logging.getLogger("localmode.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 2


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
          request_timeout_s: float = app.DEFAULT_REQUEST_TIMEOUT_S,
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
        os.environ[app.ENV_MODEL_DIR] = str(model_dir)
        os.environ[app.ENV_TIMEOUT] = str(request_timeout_s)
        os.environ[app.ENV_MAX_BODY] = str(max_body_bytes)
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
        uvicorn.run(f"{app.__name__}:create_app", factory=True, host=host, port=port, workers=workers,
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
    parser.add_argument("--timeout", type=float, default=app.DEFAULT_REQUEST_TIMEOUT_S,
                        help="seconds a request may wait + run before it gets 504")
    parser.add_argument("--max-body-bytes", type=int, default=contract.MAX_IMAGE_BYTES)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    serve(args.model, args.host, args.port, args.workers, runtime=args.runtime, threads=args.threads,
          request_timeout_s=args.timeout, max_body_bytes=args.max_body_bytes, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
