"""Is this worker healthy? A database outage clock its services share, and a tiny HTTP
endpoint that answers the question for a supervisor (and serves the worker's metrics).

A worker that cannot reach PostgreSQL still heartbeats Kafka, so the group would leave
its partitions (and the relay's advisory lock, if it could keep it) with a member that
applies nothing. :class:`DatabaseOutage` is how its services agree that the outage has
lasted too long: past ``give_up_after`` seconds the consumer leaves its group and the
relay stands down, each until PostgreSQL answers again, and ``/health`` answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from engine.exposition import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine.observability import get_logger

log = get_logger("conveyor.liveness")

HealthReport = Callable[[], tuple[bool, dict[str, Any]]]
MetricsPage = Callable[[], Awaitable[bytes]]
"""Renders the process's metrics in the Prometheus text format."""


class DatabaseOutage:
    """How long the process has been failing to use PostgreSQL, as its services saw it.

    Services call :meth:`failed` when a database round fails for want of the database and
    :meth:`succeeded` when one works; any success ends the outage.
    """

    def __init__(self, give_up_after: float, *, clock: Callable[[], float] = time.monotonic):
        self.give_up_after = give_up_after
        self._clock = clock
        self._since: float | None = None
        self.last_error = ""

    def failed(self, error: BaseException) -> None:
        if self._since is None:
            self._since = self._clock()
            log.warning("database unreachable", error=f"{type(error).__name__}: {error}")
        self.last_error = f"{type(error).__name__}: {error}"[:500]

    def succeeded(self) -> None:
        if self._since is not None:
            log.info("database reachable again", after_seconds=round(self.seconds, 1))
            self._since = None

    @property
    def seconds(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        return 0.0 if self._since is None else self._clock() - self._since

    @property
    def exceeded(self) -> bool:
        """The outage has lasted longer than the worker may hold on to its work."""
        return self._since is not None and self.seconds > self.give_up_after

    def snapshot(self) -> dict[str, Any]:
        return {
            "reachable": self._since is None,
            "outage_seconds": round(self.seconds, 1),
            "give_up_after_seconds": self.give_up_after,
            "last_error": self.last_error if self._since is not None else None,
        }


class HealthServer:
    """``GET /health`` (liveness), ``GET /ready`` and, given ``metrics``, ``GET /metrics``
    over plain HTTP/1.1, one answer per connection. ``report`` says whether the process is
    healthy, and why."""

    def __init__(
        self, host: str, port: int, report: HealthReport, metrics: MetricsPage | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.report = report
        self.metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; return the port (useful when asked for port 0)."""
        self._server = await asyncio.start_server(self._answer, self.host, self.port)
        port = int(self._server.sockets[0].getsockname()[1])
        log.info("worker health endpoint listening", host=self.host, port=port)
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: not needed
            parts = request_line.split()
            path = parts[1].split(b"?")[0] if len(parts) >= 2 else b""
            content_type = "application/json"
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                status, payload = 405, orjson.dumps({"status": "method not allowed"})
            elif path in (b"/health", b"/ready"):
                healthy, details = self.report()
                status = 200 if healthy else 503
                payload = orjson.dumps({"status": "ok" if healthy else "unhealthy", **details})
            elif path == b"/metrics" and self.metrics is not None:
                status, payload, content_type = 200, await self.metrics(), METRICS_CONTENT_TYPE
            else:
                status = 404
                payload = orjson.dumps({"status": "not found", "paths": self._paths()})
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + (payload if parts[:1] != [b"HEAD"] else b"")
            )
            await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass  # a client that went away or never spoke: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _paths(self) -> list[str]:
        return ["/health", "/ready", *(["/metrics"] if self.metrics is not None else [])]


__all__ = ["DatabaseOutage", "HealthServer", "MetricsPage"]
