"""The optional access log of a `conveyor api` process: one structured line per request."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from engine.settings import Settings
from tests.e2e.http_support import serve_process


def access_lines(output: bytes) -> list[dict[str, Any]]:
    """The access-log lines of a process's (JSON) log output."""
    lines = [orjson.loads(row) for row in output.splitlines() if row.startswith(b"{")]
    return [line for line in lines if line.get("logger") == "conveyor.access"]


def serve_and_request(**env: str) -> list[dict[str, Any]]:
    """Run the API, make two requests with known ids, stop it; return its access lines."""
    with serve_process(Settings(), **env) as (base, proc):
        health = httpx.get(f"{base}/health", headers={"X-Request-ID": "access-1"}, timeout=5)
        missing = httpx.get(
            f"{base}/instances/nope?secret=hidden",
            headers={"X-Request-ID": "access-2"},
            timeout=5,
        )
    assert health.status_code == 200
    assert missing.status_code in (401, 404)
    assert proc.stdout is not None
    output: bytes = proc.stdout.read()  # the process has exited: all of it is there
    return access_lines(output)


def test_access_log_writes_one_line_per_request() -> None:
    lines = serve_and_request(CONVEYOR_ACCESS_LOG="true")
    by_id = {line.get("request_id"): line for line in lines}
    assert [line.get("request_id") for line in lines].count("access-1") == 1
    health = by_id["access-1"]
    assert health["event"] == "request"
    assert health["level"] == "info"
    assert (health["method"], health["path"], health["status"]) == ("GET", "/health", 200)
    assert isinstance(health["duration_ms"], float)
    assert 0 <= health["duration_ms"] < 5000
    missing = by_id["access-2"]
    assert missing["path"] == "/instances/nope"  # without the query string
    assert missing["status"] in (401, 404)
    assert "hidden" not in orjson.dumps(lines).decode()


def test_access_log_is_off_by_default() -> None:
    assert serve_and_request() == []
