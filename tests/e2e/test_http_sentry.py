"""With a Sentry DSN set, an unhandled error reaches Sentry tagged with workflow, instance
and request id, and the client gets a bare problem+json 500. The "Sentry" here is a tiny
local HTTP endpoint that keeps the envelopes it receives."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import Keys, order_data, serve_process


class EnvelopeSink(ThreadingHTTPServer):
    events: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: EnvelopeSink

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        encoding = self.headers.get("content-encoding", "")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        lines = raw.split(b"\n")
        # An envelope: a header line, then (item header, item payload) pairs.
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if header.strip() and orjson.loads(header).get("type") == "event":
                self.server.events.append(orjson.loads(payload))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sentry_sink() -> Iterator[EnvelopeSink]:
    sink = EnvelopeSink(("127.0.0.1", 0), _Handler)
    sink.events = []
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    yield sink
    sink.shutdown()
    sink.server_close()
    thread.join(timeout=5)


async def test_unhandled_error_reaches_sentry_tagged_with_workflow_and_instance(
    settings: Settings, db: AsyncEngine, keys: Keys, sentry_sink: EnvelopeSink
) -> None:
    dsn = f"http://publickey@127.0.0.1:{sentry_sink.server_address[1]}/1"
    headers = {"Authorization": f"Bearer {keys.admin}", "X-Request-ID": "req-sentry-1"}
    with serve_process(settings, CONVEYOR_SENTRY_DSN=dsn) as (base, _):
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
            started = await http.post(
                "/v1/workflows/order/instances",
                json={"business_key": "o-sentry", "data": order_data("o-sentry")},
            )
            instance_id = started.json()["id"]
            # Corrupted storage written behind the engine's back: a failed instance whose
            # error names no event, so an operator's retry meets what cannot happen.
            async with db.begin() as conn:
                await conn.execute(
                    text(
                        "update instances set status = 'failed', error = '{\"ghost\": 1}'"
                        " where id = :i"
                    ),
                    {"i": instance_id},
                )
            response = await http.post(f"/v1/instances/{instance_id}/retry")
            # A 4xx the API answers on purpose is not reported.
            assert (await http.get("/v1/workflows/nope")).status_code == 404

            async def reported() -> list[dict[str, Any]]:
                return sentry_sink.events

            events = await wait_for(reported, timeout=15)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert "ghost" not in response.text
    assert "Traceback" not in response.text
    assert body["request_id"] == "req-sentry-1"
    unknown_state = [
        e for e in events if "KeyError" in orjson.dumps(e.get("exception", {})).decode()
    ]
    assert unknown_state, events
    tags = unknown_state[0]["tags"]
    assert tags["workflow"] == "order"
    assert tags["instance"] == instance_id
    assert tags["request_id"] == "req-sentry-1"
    assert not any("Unknown workflow" in orjson.dumps(e).decode() for e in events)
    # Frames carry no local variables: they would hold instance data and payloads.
    frames = [
        frame
        for value in unknown_state[0]["exception"]["values"]
        for frame in (value.get("stacktrace") or {}).get("frames", [])
    ]
    assert frames
    assert not any(frame.get("vars") for frame in frames)
