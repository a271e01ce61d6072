"""Process supervision for the local endpoint (localmode/server.py): start `python -m localmode.server` in the
background in its own process group, wait for /ping, and stop the group (SIGTERM, then SIGKILL) with one
function, `stop_server`, whether this process started the server (BackgroundServer) or a previous command
did and recorded its pid (localmode.endpoint).
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
from dataclasses import dataclass
from pathlib import Path

from localmode.app import DEFAULT_REQUEST_TIMEOUT_S
from localmode.server import DEFAULT_HOST, DEFAULT_WORKERS


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


def running(pid: int) -> bool:
    """Whether `pid` still exists (a recorded server is not this process's child: no wait() for it)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_server(pid: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> int | None:
    """Stop a server started by `start_background` (the leader of its own process group, with its workers):
    SIGTERM (graceful: in-flight requests finish), SIGKILL when it has not exited after `timeout`.

    `process`: the server's Popen when this process started it; it is then waited for and its exit code
    returned. Without it (a server a previous command recorded, not our child) the pid is watched and the
    answer is None."""
    def exited() -> bool:
        return process.poll() is not None if process is not None else not running(pid)

    # A recorded leader that is gone may leave workers in its group: the group is signalled all the same.
    if process is None or process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not exited() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not exited():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    if process is None:
        return None
    return process.wait(5)


@dataclass
class BackgroundServer:
    """A server started by `start_background`: `url`, `stop()`, usable as a context manager."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path | None

    def stop(self, timeout: float = 20.0) -> int:
        """stop_server on this server. Returns its exit code."""
        stop_server(self.process.pid, timeout, self.process)
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
