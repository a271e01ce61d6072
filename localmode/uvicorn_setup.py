"""How localmode/server.py runs under uvicorn: JSON-lines logging in every worker process, the timeouts,
and the HTTP protocol class with its TCP_NODELAY fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

KEEP_ALIVE_TIMEOUT_S = 5
GRACEFUL_SHUTDOWN_TIMEOUT_S = 15


class JsonFormatter(logging.Formatter):
    """One JSON object per line: message fields merged in when the message is itself a JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname,
                                 "logger": record.name, "pid": record.process}
        message = record.getMessage()
        try:
            parsed = json.loads(message) if message.startswith("{") else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            entry.update(parsed)
        else:
            entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with TCP_NODELAY on every connection.

    asyncio sets TCP_NODELAY itself only when the socket says it is IPPROTO_TCP; the listening socket
    uvicorn hands to its worker processes is rebuilt from a file descriptor with proto 0, so with
    workers > 1 Nagle's algorithm met the client's delayed ACK and every request waited ~40 ms
    (measured: /ping 0.4 ms with one worker, 44 ms with two, on a bare Starlette app too)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def log_config(level: str = "info") -> dict[str, Any]:
    """logging.config dict for uvicorn and us: JSON lines on stderr, in every worker process."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }
