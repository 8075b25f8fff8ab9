"""Idempotency-Key on starts over real HTTP: races, API-key scope, failures, crashed claims."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api import idempotency
from api.schemas import StartInstance
from engine.auth import verify_api_key
from tests.e2e.http_support import Keys, order_data

START = "/v1/workflows/order/instances"


@pytest.fixture
async def client(base: str, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {keys.write}"}, timeout=30
    ) as http:
        yield http


def start_body(business_key: str) -> dict[str, Any]:
    return {"business_key": business_key, "data": order_data(business_key)}


async def count(db: AsyncEngine, query: str, **params: Any) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(query), params)).scalar_one())


async def test_concurrent_starts_with_one_key_and_different_bodies_let_exactly_one_win(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    headers = {"Idempotency-Key": "race-different"}
    bodies = [start_body(f"o-race-{i}") for i in range(20)]
    responses = await asyncio.gather(*(client.post(START, json=b, headers=headers) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [422] * 19, [r.text for r in responses]
    (winner,) = [r for r in responses if r.status_code == 201]
    winning_body = bodies[responses.index(winner)]
    assert winner.json()["business_key"] == winning_body["business_key"]
    for refused in (r for r in responses if r.status_code == 422):
        assert refused.json()["title"] == "Idempotency key reused"
    assert await count(db, "select count(*) from instances") == 1
    # Afterwards too: the winner's body is answered from its stored response, others 422.
    retry = await client.post(START, json=winning_body, headers=headers)
    assert (retry.status_code, retry.content) == (201, winner.content)
    loser = next(b for b in bodies if b is not winning_body)
    assert (await client.post(START, json=loser, headers=headers)).status_code == 422


async def test_concurrent_starts_with_one_key_and_the_same_body_get_one_instance(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    headers = {"Idempotency-Key": "race-same"}
    body = start_body("o-same")
    responses = await asyncio.gather(
        *(client.post(START, json=body, headers=headers) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.content for r in responses}) == 1
    # One request ran the start; the others were answered with its stored response.
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert await count(db, "select count(*) from instances") == 1
    assert await count(db, "select count(*) from history where outcome = 'started'") == 1


async def test_another_api_key_is_never_answered_from_the_first_keys_response(
    base: str, keys: Keys, db: AsyncEngine
) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    async with (
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": keys.write}, timeout=10) as one,
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": keys.admin}, timeout=10) as two,
    ):
        first = await one.post(START, json=start_body("o-one"), headers=headers)
        assert first.status_code == 201, first.text
        # The same body from another key is that key's own start: the business key is
        # taken, so 409; not the first key's stored 201.
        same = await two.post(START, json=start_body("o-one"), headers=headers)
        assert same.status_code == 409, same.text
        assert "idempotent-replayed" not in same.headers
        # Another body under the same Idempotency-Key is no reuse for the other key.
        other = await two.post(START, json=start_body("o-two"), headers=headers)
        assert other.status_code == 201, other.text
        assert "idempotent-replayed" not in other.headers
        assert other.json()["id"] != first.json()["id"]
        assert other.json()["business_key"] == "o-two"
        # Each key's retry gets its own stored response.
        again_one = await one.post(START, json=start_body("o-one"), headers=headers)
        again_two = await two.post(START, json=start_body("o-two"), headers=headers)
    assert (again_one.status_code, again_one.content) == (201, first.content)
    assert (again_two.status_code, again_two.content) == (201, other.content)
    assert again_one.headers["idempotent-replayed"] == again_two.headers["idempotent-replayed"]
    assert await count(db, "select count(*) from instances") == 2


async def test_a_failed_start_stores_nothing_and_frees_the_key(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "fails-first"}
    bad = start_body("o-bad")
    bad["data"]["currency"] = "euro"
    refused = await client.post(START, json=bad, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["title"] == "Invalid payload"
    fixed = await client.post(START, json=start_body("o-fixed"), headers=headers)
    assert fixed.status_code == 201, fixed.text
    assert "idempotent-replayed" not in fixed.headers


async def test_a_claim_left_by_a_crashed_request_is_taken_over_after_its_lease(
    client: httpx.AsyncClient, keys: Keys, db: AsyncEngine
) -> None:
    api_key = await verify_api_key(db, keys.write)
    assert api_key is not None
    body = start_body("o-crash")
    digest = idempotency.request_hash(
        "order", StartInstance.model_validate(body).model_dump(mode="json")
    )
    scope = idempotency.KeyScope(api_key.id, "crashed", "start:order")
    # A request claimed the key, then died before starting anything: its lease runs out.
    crashed = await idempotency.claim(db, scope, digest, lease=timedelta(milliseconds=100))
    assert isinstance(crashed, idempotency.Claim)
    headers = {"Idempotency-Key": "crashed"}
    other = await client.post(START, json=start_body("o-else"), headers=headers)
    assert other.status_code == 422  # the key stays the crashed request's
    retry = await client.post(START, json=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.json()["business_key"] == "o-crash"
    again = await client.post(START, json=body, headers=headers)
    assert (again.status_code, again.content) == (201, retry.content)
