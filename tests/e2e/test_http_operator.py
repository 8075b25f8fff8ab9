"""The operator's HTTP reads: /v1/stats at scale, the instance filters (and their 400s),
timers, and the cancel's answer. Against the real PostgreSQL, through a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.http_support import Keys, order_data

STATES = ("placed", "payment_pending", "paid", "packed", "cancelled")


@pytest.fixture
async def client(base: str, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {keys.admin}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        yield http


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


async def start(client: httpx.AsyncClient, key: str, **data: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/workflows/order/instances",
        json={"business_key": key, "data": {**order_data(key), **data}},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def send(
    client: httpx.AsyncClient, instance: dict[str, Any], type_: str, **payload: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/instances/{instance['id']}/events", json={"type": type_, "payload": payload}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_count_100k_instances_by_state_status_and_sla(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    # 100,000 orders spread over five states; half of the paid ones entered paid two days
    # ago (past its 24 h SLA), and the cancelled ones ended cancelled.
    async with db.begin() as conn:
        await conn.execute(
            text(
                "insert into instances (id, workflow, version, business_key, state, data,"
                " status, state_entered_at)"
                " select gen_random_uuid(), 'order', 1, 'S-' || i,"
                " (cast(:states as text[]))[1 + i % 5],"
                " jsonb_build_object('customer_id', 'C-' || (i % 100)),"
                " case when i % 5 = 4 then 'cancelled' else 'active' end,"
                " case when i % 5 = 2 and i % 2 = 0 then now() - interval '2 days' else now() end"
                " from generate_series(0, 99999) as i"
            ),
            {"states": list(STATES)},
        )
        await conn.execute(text("analyze instances"))
    response = await client.get("/v1/stats", params={"workflow": "order"})
    assert response.status_code == 200, response.text
    (order,) = response.json()["workflows"]
    assert (order["workflow"], order["version"], order["total"]) == ("order", 1, 100_000)
    assert order["by_status"] == {"active": 80_000, "cancelled": 20_000}
    states = {s["state"]: s for s in order["states"]}
    assert set(states) == set(STATES)
    assert all(s["total"] == 20_000 for s in states.values())
    assert states["paid"]["sla_seconds"] == 24 * 3600
    assert states["paid"]["sla_breached"] == 10_000 == order["sla_breached"]
    assert states["placed"]["sla_seconds"] is None
    assert states["cancelled"]["oldest_state_entered_at"] is None  # none running there
    assert states["paid"]["oldest_state_entered_at"] < states["placed"]["oldest_state_entered_at"]
    # The same instances through the list: filters agree with the counts.
    late = await client.get(
        "/v1/instances", params={"workflow": "order", "sla_breached": "true", "limit": 500}
    )
    assert late.status_code == 200
    assert len(late.json()["items"]) == 500
    assert late.json()["next_cursor"] is not None
    assert all(i["sla_breached"] and i["state"] == "paid" for i in late.json()["items"])
    # Stuck lists come longest in their state first, and page on in that order.
    after = await client.get(
        "/v1/instances",
        params={
            "workflow": "order",
            "sla_breached": "true",
            "limit": 500,
            "cursor": late.json()["next_cursor"],
        },
    )
    assert after.status_code == 200, after.text
    pages = late.json()["items"] + after.json()["items"]
    assert len({i["id"] for i in pages}) == 1000
    order = [(i["state_entered_at"], i["id"]) for i in pages]
    assert order == sorted(order)
    wrong_list = await client.get(
        "/v1/instances", params={"workflow": "order", "cursor": late.json()["next_cursor"]}
    )
    assert "another list" in problem(wrong_list, 400)["detail"]
    aged = await client.get("/v1/instances", params={"in_state_longer_than": "P1D", "limit": 500})
    assert {i["state"] for i in aged.json()["items"]} == {"paid"}
    assert aged.json()["next_cursor"] is not None
    c7 = await client.get(
        "/v1/instances", params={"workflow": "order", "data.customer_id": "C-7", "limit": 500}
    )
    assert {i["data"]["customer_id"] for i in c7.json()["items"]} == {"C-7"}
    assert len(c7.json()["items"]) == 500  # 1,000 of them: a full page and a cursor
    assert (await client.get("/v1/stats")).status_code == 200
    problem(await client.get("/v1/stats", params={"workflow": "nope"}), 404)


async def test_unknown_or_malformed_list_parameters_are_400_naming_them(
    client: httpx.AsyncClient,
) -> None:
    cases = {
        "colour": {"colour": "red"},
        "in_state_longer_than": {"in_state_longer_than": "2 hours"},
        "sla_breached": {"sla_breached": "maybe"},
        "version": {"version": "0"},
        "data.customer_id": {"data.customer_id": "C-1"},  # needs workflow
        "data.shoe_size": {"workflow": "order", "data.shoe_size": "42"},
        "data.delivery_attempts": {"workflow": "order", "data.delivery_attempts": "two"},
        "data.customer_id=": {"workflow": "order", "data.customer_id": "C\x007"},
        "data.delivery_attempts=": {"workflow": "order", "data.delivery_attempts": "9" * 30},
    }
    for name, params in cases.items():
        body = problem(await client.get("/v1/instances", params=params), 400)
        assert name.rstrip("=") in body["detail"], (name, body)
    problem(await client.get("/v1/instances/00000000-0000-0000-0000-000000000000?x=1"), 400)
    problem(await client.get("/v1/stats", params={"state": "paid"}), 400)


async def test_filters_by_version_time_in_state_and_typed_data(client: httpx.AsyncClient) -> None:
    a = await start(client, "F-1", customer_id="C-1")
    await start(client, "F-2", customer_id="C-2")
    await send(client, a, "payment.initiated", payment_id="P-1", provider="stripe")

    async def keys(**params: str) -> set[str]:
        response = await client.get("/v1/instances", params={"workflow": "order", **params})
        assert response.status_code == 200, response.text
        return {i["business_key"] for i in response.json()["items"]}

    assert await keys(version="1") == {"F-1", "F-2"}
    assert await keys(version="2") == set()
    assert await keys(**{"data.customer_id": "C-2"}) == {"F-2"}
    assert await keys(**{"data.payment.provider": "stripe"}) == {"F-1"}
    assert await keys(**{"data.delivery_attempts": "0"}) == {"F-1", "F-2"}  # typed: 0, not "0"
    assert await keys(**{"data.delivery_attempts": "1"}) == set()
    assert await keys(in_state_longer_than="PT1H") == set()
    assert await keys(in_state_longer_than="PT0.001S") == {"F-1", "F-2"}


async def test_timers_list_pending_timers_soonest_first(client: httpx.AsyncClient) -> None:
    order = await start(client, "T-1")
    assert (await client.get(f"/v1/instances/{order['id']}/timers")).json() == {"items": []}
    await send(client, order, "payment.initiated", payment_id="P-1", provider="x")
    response = await client.get(f"/v1/instances/{order['id']}/timers")
    (timer,) = response.json()["items"]
    assert (timer["name"], timer["state"], timer["kind"]) == (
        "payment_timeout",
        "payment_pending",
        "timer",
    )
    assert timer["overdue_seconds"] == 0
    problem(await client.get("/v1/instances/00000000-0000-0000-0000-000000000000/timers"), 404)


async def test_cancel_answers_which_cancel_ran(client: httpx.AsyncClient) -> None:
    order = await start(client, "C-1")
    await send(client, order, "payment.initiated", payment_id="P-1", provider="x")
    await send(client, order, "payment.captured", payment_id="P-1", amount="10", currency="EUR")
    response = await client.post(f"/v1/instances/{order['id']}/cancel", json={"reason": "fraud"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["mode"], body["transition"]) == ("transition", "operator_cancel_paid")
    assert (body["instance"]["state"], body["instance"]["status"]) == ("cancelled", "cancelled")
    assert body["instance"]["data"]["refund_requested"] is True
    reserved = await client.post(
        f"/v1/instances/{order['id']}/events", json={"type": "conveyor.cancel"}
    )
    assert any("reserved" in e["message"] for e in problem(reserved, 422)["errors"])


async def test_move_puts_an_instance_into_a_declared_state(client: httpx.AsyncClient) -> None:
    order = await start(client, "MV-1")
    url = f"/v1/instances/{order['id']}"
    moved = await client.post(f"{url}/move", json={"state": "payment_pending", "reason": "x"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["state"] == "payment_pending"
    (timer,) = (await client.get(f"{url}/timers")).json()["items"]
    assert timer["name"] == "payment_timeout"
    bad = problem(await client.post(f"{url}/move", json={"state": "limbo"}), 422)
    assert "limbo" in bad["errors"][0]["message"]
    problem(await client.post(f"{url}/move", json={}), 422)
    await client.post(f"{url}/move", json={"state": "cancelled"})
    problem(await client.post(f"{url}/move", json={"state": "placed"}), 409)


async def test_move_runs_the_hooks_only_with_run_hooks(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    order = await start(client, "MV-2")
    url = f"/v1/instances/{order['id']}"
    sent = "select count(*) from outbox where instance_id = :i and value like '%order.delivered%'"

    async def delivered_messages() -> int:
        async with db.connect() as conn:
            found: int = (await conn.execute(text(sent), {"i": order["id"]})).scalar_one()
        return found

    for not_a_bool in ("yes", 1, None):
        body = {"state": "delivered", "run_hooks": not_a_bool}
        bad = problem(await client.post(f"{url}/move", json=body), 422)
        assert bad["errors"][0]["path"] == "run_hooks"
    quiet = await client.post(f"{url}/move", json={"state": "delivered", "run_hooks": False})
    assert quiet.status_code == 200, quiet.text
    assert quiet.json()["data"]["delivered_at"] is None
    assert await delivered_messages() == 0
    await client.post(f"{url}/move", json={"state": "shipped"})
    hooked = await client.post(f"{url}/move", json={"state": "delivered", "run_hooks": True})
    assert hooked.status_code == 200, hooked.text
    assert hooked.json()["data"]["delivered_at"] is not None
    assert await delivered_messages() == 1
    history = (await client.get(f"{url}/history")).json()["items"]
    assert [h["payload"].get("run_hooks") for h in history if h["outcome"] == "moved"] == [
        False,
        False,
        True,
    ]
