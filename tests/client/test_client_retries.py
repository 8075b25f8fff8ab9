"""Retries: the backoff and which calls are sent again (pure logic, over
``httpx.MockTransport``), then against real processes: an API that is not up yet, and an
API whose database is unreachable (503)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor_client import (
    AsyncConveyor,
    Conveyor,
    RetryPolicy,
    TransportError,
    Unavailable,
)
from conveyor_client.retrying import retry_after_error, retry_after_status
from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import Keys, free_port, order_data, process_env, serve_process
from tests.live_support import STOP_TIMEOUT

INSTANCE_ID = "0b7e5d84-6d3e-4a3e-9d59-7a8a0d8a1c11"
INSTANCE: dict[str, Any] = {
    "id": INSTANCE_ID,
    "workflow": "order",
    "version": 1,
    "business_key": "o-1",
    "state": "placed",
    "status": "active",
    "data": {},
    "revision": 1,
    "created_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:00:00+00:00",
    "state_entered_at": "2026-01-01T00:00:00+00:00",
    "sla_due_at": None,
    "sla_breached": False,
    "error": None,
}


def busy_answer() -> httpx.Response:
    """A 503 problem (a new response each time: a response is read once)."""
    return httpx.Response(
        503,
        json={"type": "about:blank", "title": "Service Unavailable", "status": 503},
        headers={"Retry-After": "0"},
    )


# ---------------------------------------------------------------- pure backoff logic


def test_the_backoff_doubles_is_capped_jittered_and_honours_retry_after() -> None:
    exact = RetryPolicy(retries=6, backoff=0.5, max_backoff=4.0, rng=lambda: 0.0)
    assert [exact.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    halved = RetryPolicy(backoff=0.5, jitter=0.5, rng=lambda: 1.0)
    assert halved.delay(1) == 0.5
    assert exact.delay(0, retry_after=3.0) == 3.0
    assert exact.delay(0, retry_after=60.0) == 4.0  # never longer than max_backoff
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_which_failures_are_retried() -> None:
    policy = RetryPolicy(retries=2, rng=lambda: 0.0)
    refused = httpx.ConnectError("refused")
    lost = httpx.ReadTimeout("slow")
    assert retry_after_error(policy, 0, refused, retry_safe=False) is not None
    assert retry_after_error(policy, 0, lost, retry_safe=False) is None
    assert retry_after_error(policy, 0, lost, retry_safe=True) is not None
    assert retry_after_error(policy, 2, refused, retry_safe=True) is None  # out of retries
    assert retry_after_status(policy, 0, 503, True, None) is not None
    assert retry_after_status(policy, 0, 503, False, None) is None
    assert retry_after_status(policy, 0, 500, True, None) is None
    assert retry_after_status(policy, 0, 409, True, None) is None


class Script:
    """Answers requests from a list (an exception is raised), recording each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script: Script, retries: int = 3) -> AsyncConveyor:
    return AsyncConveyor(
        "http://conveyor.test",
        "secret-key",
        retries=retries,
        backoff=0.0,
        transport=httpx.MockTransport(script),
    )


async def test_a_start_is_sent_again_after_503s_with_the_same_idempotency_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    script = Script(
        busy_answer(), httpx.ConnectError("refused"), httpx.Response(201, json=INSTANCE)
    )
    async with client(script) as conveyor:
        instance = await conveyor.start("order", "o-1", {})
    assert instance.id == INSTANCE_ID
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 3
    assert len(keys) == 1
    assert {r.headers["Authorization"] for r in script.requests} == {"Bearer secret-key"}
    assert "secret-key" not in repr(conveyor)
    assert "secret-key" not in repr(conveyor.settings)
    retried = [r.getMessage() for r in caplog.records if r.name == "conveyor_client"]
    assert len(retried) == 2
    assert retried[0].startswith("retrying POST /v1/workflows/order/instances in ")
    assert "HTTP 503" in retried[0]
    assert "secret-key" not in caplog.text


async def test_an_event_is_sent_again_with_its_id() -> None:
    outcome = {
        "outcome": {"event_id": "x", "status": "applied", "from_state": "a", "to_state": "b"},
        "instance": INSTANCE,
    }
    script = Script(httpx.ReadTimeout("lost"), httpx.Response(200, json=outcome))
    async with client(script) as conveyor:
        sent = await conveyor.send(INSTANCE_ID, "payment.initiated", {})
    assert sent.status == "applied"
    ids = [r.read() for r in script.requests]
    assert ids[0] == ids[1]
    assert b'"id":' in ids[0]


async def test_calls_that_are_not_idempotent_are_sent_again_only_when_nothing_was_sent() -> None:
    moved = Script(httpx.ConnectError("refused"), httpx.Response(200, json=INSTANCE))
    async with client(moved) as conveyor:
        await conveyor.move(INSTANCE_ID, "paid")
    assert len(moved.requests) == 2
    lost = Script(httpx.ReadTimeout("lost"))
    async with client(lost) as conveyor:
        with pytest.raises(TransportError) as raised:
            await conveyor.move(INSTANCE_ID, "paid")
    assert raised.value.attempts == 1
    unavailable = Script(busy_answer())
    async with client(unavailable) as conveyor:
        with pytest.raises(Unavailable):
            await conveyor.retry(INSTANCE_ID)
    assert len(unavailable.requests) == 1


async def test_the_retries_are_bounded() -> None:
    script = Script(*[httpx.ConnectError("refused")] * 3)
    async with client(script, retries=2) as conveyor:
        with pytest.raises(TransportError) as raised:
            await conveyor.get(INSTANCE_ID)
    assert raised.value.attempts == 3
    busy = Script(busy_answer(), busy_answer(), busy_answer())
    with (
        Conveyor(
            "http://conveyor.test", retries=2, backoff=0.0, transport=httpx.MockTransport(busy)
        ) as conveyor,
        pytest.raises(Unavailable) as unavailable,
    ):
        conveyor.get(INSTANCE_ID)
    assert unavailable.value.retry_after == 0.0
    assert len(busy.requests) == 3


# ---------------------------------------------------------------- real processes


class CountingTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, counting connection failures."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectError:
            self.refused += 1
            raise


class LaterApi:
    """A free port where a test starts ``conveyor api`` when it chooses; stopped after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "api"],
            env=process_env(self.settings, self.port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def api_later(console_settings: Settings) -> Iterator[LaterApi]:
    api = LaterApi(console_settings)
    yield api
    api.stop()


async def test_a_start_waits_for_an_api_that_is_not_up_yet(
    console_settings: Settings,
    console_keys: Keys,
    api_later: LaterApi,
) -> None:
    base = api_later.base
    transport = CountingTransport()
    business_key = f"late-{uuid.uuid4().hex[:8]}"
    async with AsyncConveyor(
        base, console_keys.write, retries=400, backoff=0.05, max_backoff=0.1, transport=transport
    ) as conveyor:
        starting = asyncio.create_task(
            conveyor.start("order", business_key, order_data(business_key))
        )

        async def refused_twice() -> bool:
            return transport.refused >= 2

        await wait_for(refused_twice)
        api_later.start()
        instance = await asyncio.wait_for(starting, timeout=60)
        assert (instance.business_key, instance.state) == (business_key, "placed")
        assert (await conveyor.find("order", business_key)).id == instance.id


def test_an_api_without_its_database_answers_503_until_the_retries_run_out(
    console_settings: Settings, console_keys: Keys
) -> None:
    unreachable = console_settings.model_copy(
        update={"database_url": "postgresql+asyncpg://conveyor:conveyor@127.0.0.1:9/conveyor"}
    )
    with serve_process(unreachable) as (base, _proc):
        begun = time.monotonic()
        with Conveyor(base, console_keys.read, retries=2, backoff=0.05) as conveyor:
            with pytest.raises(Unavailable) as raised:
                conveyor.workflows()
            assert raised.value.status == 503
            assert raised.value.request_id
            assert raised.value.retry_after is not None
            # Retry-After (2 s) is honoured but capped at max_backoff (5 s): two waits.
            assert time.monotonic() - begun >= 2 * 2.0
            with pytest.raises(Unavailable):
                conveyor.retry(str(uuid.uuid4()))
