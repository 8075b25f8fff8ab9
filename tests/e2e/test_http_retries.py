"""Durable retries over HTTP: a failing action answers 202 at once (the request does not
wait for the backoff), later events are kept in order behind it, and the operator's retry
applies them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from engine.settings import Settings
from tests import flows
from tests.e2e.http_support import make_keys, serve_in_process


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    keys = await make_keys(settings)
    with_flows = settings.model_copy(update={"workflow_modules": ["workflows", "tests.flows"]})
    async with (
        serve_in_process(with_flows) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def test_a_failing_action_answers_202_retrying_at_once_and_later_events_wait(
    client: httpx.AsyncClient,
) -> None:
    started = await client.post(
        "/v1/workflows/test.counter/instances",
        json={"business_key": "H-1", "data": {"key": "H-1"}, "version": 1},
    )
    assert started.status_code == 201, started.text
    url = f"/v1/instances/{started.json()['id']}"
    flows.FAILURES["H-1"] = 1

    began = time.monotonic()
    failed = await client.post(
        f"{url}/events", json={"type": "counter.slow_label", "payload": {"label": "x"}}
    )
    # The policy's first backoff is 30 s: answered long before it, without sleeping.
    assert time.monotonic() - began < 10
    assert failed.status_code == 202, failed.text
    assert failed.json()["outcome"]["status"] == "retrying"
    assert failed.json()["instance"]["status"] == "retrying"
    assert failed.json()["instance"]["error"]["next_attempt_at"]

    parked = await client.post(f"{url}/events", json={"type": "counter.close", "id": "c-1"})
    assert parked.status_code == 202, parked.text
    assert parked.json()["outcome"]["status"] == "parked"

    listed = await client.get("/v1/instances", params={"status": "retrying"})
    assert [i["business_key"] for i in listed.json()["items"]] == ["H-1"]

    # An operator need not wait for the timer: retry now applies the label, then the close.
    retried = await client.post(f"{url}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["outcome"]["to_state"] == "labelled"
    instance = (await client.get(url)).json()
    assert (instance["state"], instance["status"]) == ("closed", "completed")
