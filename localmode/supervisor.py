"""Process supervision for the local endpoint (localmode/server.py): start `python -m localmode.server` in the
background in its own process group, wait for /ping, and stop the group (SIGTERM, then SIGKILL), for the
server this process started (BackgroundServer) and for one a previous command recorded (localmode.endpoint).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localmode.server import DEFAULT_HOST, DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_WORKERS


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ping(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_process_group(pid: int, timeout: float, exited: Callable[[], bool]) -> None:
    """Stop a server started by `start_background` (the leader of its own process group, with its workers):
    SIGTERM (graceful: in-flight requests finish), SIGKILL once `exited()` is still false after `timeout`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not exited() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not exited():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@dataclass
class BackgroundServer:
    """A server started by `start_background`: `url`, `stop()`, usable as a context manager."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path | None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful: in-flight requests finish), SIGKILL after `timeout`. Returns the exit code."""
        if self.process.poll() is None:
            stop_process_group(self.process.pid, timeout, exited=lambda: self.process.poll() is not None)
            self.process.wait(5)
        return int(self.process.returncode)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_background(model: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int = 0,
                     workers: int = DEFAULT_WORKERS, *, runtime: str | None = None,
                     threads: int | None = None, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
                     log_path: Path | None = None,
                     startup_timeout_s: float = 120.0, env: dict[str, str] | None = None) -> BackgroundServer:
    """Start `python -m localmode.server` in its own process group and wait until /ping answers 200.
    port 0 picks a free port."""
    port = port or free_port(host)
    command = [sys.executable, "-m", "localmode.server", str(model), "--host", host, "--port", str(port),
               "--workers", str(workers), "--timeout", str(request_timeout_s)]
    if runtime:
        command += ["--runtime", runtime]
    if threads:
        command += ["--threads", str(threads)]
    log = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, **(env or {})})
    finally:
        if log_path:
            log.close()  # type: ignore[union-attr]
    server = BackgroundServer(process, f"http://{host}:{port}", log_path)
    deadline = time.monotonic() + startup_timeout_s
    while not ping(server.url, timeout=1.0):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}"
                               + (f": see {log_path}" if log_path else ""))
        if time.monotonic() > deadline:
            server.stop(timeout=5)
            raise RuntimeError(f"the server did not answer /ping within {startup_timeout_s:g} s")
        time.sleep(0.2)
    return server
