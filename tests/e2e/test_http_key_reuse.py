"""Business-key reuse over HTTP: a ticket number used again once its ticket has ended
answers 201 with a new instance, and the lookup by key lists the earlier ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from tests.e2e.http_support import make_keys, serve_in_process

TICKETS = "/v1/workflows/test.ticket/instances"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    keys = await make_keys(settings)
    with_tickets = settings.model_copy(
        update={"workflow_modules": ["workflows", "tests.key_reuse_flows"]}
    )
    async with (
        serve_in_process(with_tickets) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def open_ticket(
    client: httpx.AsyncClient, number: str, *, version: int = 1, idempotency_key: str = ""
) -> httpx.Response:
    return await client.post(
        TICKETS,
        json={"business_key": number, "data": {"number": number}, "version": version},
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
    )


async def withdraw(client: httpx.AsyncClient, ticket: dict[str, Any]) -> None:
    response = await client.post(f"/v1/instances/{ticket['id']}/cancel", json={"reason": "dup"})
    assert response.status_code == 200, response.text
    assert response.json()["instance"]["status"] == "cancelled"


async def test_a_reused_number_answers_201_and_the_lookup_lists_the_earlier_tickets(
    client: httpx.AsyncClient,
) -> None:
    first = await open_ticket(client, "T/1")
    assert first.status_code == 201, first.text
    await withdraw(client, first.json())
    second = await open_ticket(client, "T/1", idempotency_key="reopen-1")
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"]
    await withdraw(client, second.json())
    third = await open_ticket(client, "T/1")
    assert third.status_code == 201, third.text

    found = await client.get(f"{TICKETS}/T%2F1")

    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["id"], body["state"], body["status"]) == (third.json()["id"], "open", "active")
    assert [(e["id"], e["version"], e["status"], e["state"]) for e in body["earlier"]] == [
        (second.json()["id"], 1, "cancelled", "withdrawn"),
        (first.json()["id"], 1, "cancelled", "withdrawn"),
    ]
    assert body["earlier"][0]["created_at"] == second.json()["created_at"]
    assert set(body["earlier"][0]) == {"id", "version", "status", "state", "created_at"}

    # The second start again (same Idempotency-Key): the same answer, no fourth ticket.
    replayed = await open_ticket(client, "T/1", idempotency_key="reopen-1")
    assert replayed.status_code == 201, replayed.text
    assert replayed.json()["id"] == second.json()["id"]
    assert len((await client.get(f"{TICKETS}/T%2F1")).json()["earlier"]) == 2


async def test_a_live_ticket_or_a_version_without_reuse_keeps_the_number(
    client: httpx.AsyncClient,
) -> None:
    live = await open_ticket(client, "T-2")
    assert live.status_code == 201, live.text
    conflict = await open_ticket(client, "T-2")
    assert conflict.status_code == 409, conflict.text
    assert conflict.headers["content-type"].startswith("application/problem+json")
    await withdraw(client, live.json())
    never = await open_ticket(client, "T-2", version=2)  # v2 never reuses a number
    assert never.status_code == 409, never.text

    found = (await client.get(f"{TICKETS}/T-2")).json()
    assert (found["id"], found["status"], found["earlier"]) == (live.json()["id"], "cancelled", [])
