"""``/v1/bulk`` over real HTTP: dry runs, jobs and their items, cancelling a job, and the
answers to bad filters, missing scopes and unknown jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.bulk_runner import JobRunner
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from tests.e2e.http_support import Keys, serve_in_process
from tests.e2e.test_http_api import assert_problem, start_order


@pytest.fixture
async def client(settings: Settings, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_in_process(settings) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def orders(http: httpx.AsyncClient, n: int) -> list[dict[str, Any]]:
    return [await start_order(http, f"bulk-{i}") for i in range(n)]


async def run_jobs(settings: Settings, db: AsyncEngine) -> None:
    """What a worker's job runner does, here."""
    runtime = Runtime(db, load_workflows(settings.workflow_modules))
    await JobRunner(runtime, batch_size=2).run_pending()


async def test_a_dry_run_answers_the_count_and_a_sample_and_writes_nothing(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    made = await orders(client, 3)
    response = await client.post(
        "/v1/bulk",
        json={"action": "cancel", "filter": {"workflow": "order"}, "dry_run": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 3
    assert [i["id"] for i in body["sample"]] == [m["id"] for m in made]
    async with db.connect() as conn:
        assert (await conn.execute(text("select count(*) from jobs"))).scalar_one() == 0


async def test_a_job_is_created_applied_and_read_with_its_items(
    client: httpx.AsyncClient, settings: Settings, db: AsyncEngine
) -> None:
    made = await orders(client, 5)
    response = await client.post(
        "/v1/bulk",
        json={
            "action": "cancel",
            "filter": {"workflow": "order", "data": {"customer_id": "c-1"}},
            "reason": "warehouse fire",
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/bulk/{job['id']}"
    assert (job["status"], job["total"], job["done"], job["progress"]) == ("running", 5, 0, 0)
    assert job["filter"] == {"workflow": "order", "data": {"customer_id": "c-1"}}
    await run_jobs(settings, db)
    done = (await client.get(f"/v1/bulk/{job['id']}")).json()
    assert (done["status"], done["succeeded"], done["progress"]) == ("completed", 5, 1.0)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"status": "succeeded", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"/v1/bulk/{job['id']}/items", params=params)).json()
        seen += [i["instance_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(m["id"] for m in made)
    instance = (await client.get(f"/v1/instances/{made[0]['id']}")).json()
    assert instance["status"] == "cancelled"


async def test_a_running_job_can_be_cancelled(client: httpx.AsyncClient) -> None:
    await orders(client, 2)
    job = (
        await client.post("/v1/bulk", json={"action": "cancel", "filter": {"state": "placed"}})
    ).json()
    response = await client.post(f"/v1/bulk/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["skipped"]) == ("cancelled", 2)
    items = (await client.get(f"/v1/bulk/{job['id']}/items")).json()["items"]
    assert {i["reason"] for i in items} == {"job cancelled"}


async def test_an_idempotency_key_makes_creation_safe_to_retry(client: httpx.AsyncClient) -> None:
    await orders(client, 1)
    body = {"action": "cancel", "filter": {"workflow": "order"}}
    headers = {"Idempotency-Key": "bulk-1"}
    first = await client.post("/v1/bulk", json=body, headers=headers)
    again = await client.post("/v1/bulk", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(
        "/v1/bulk", json={**body, "reason": "something else"}, headers=headers
    )
    assert_problem(other, 422)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"action": "cancel", "filter": {"colour": "red"}}, "unknown filter 'colour'"),
        ({"action": "cancel", "filter": {}}, '"all": true'),
        ({"action": "cancel", "filter": {"status": "asleep"}}, "status"),
        ({"action": "cancel", "filter": {"version": "2"}}, "version"),
        ({"action": "cancel", "filter": {"data": {"customer_id": "c"}}}, "needs workflow"),
        ({"action": "send_event", "filter": {"all": True}}, "needs an event"),
        ({"action": "retry", "filter": {"all": True}, "status_only": True}, "status_only"),
        (
            {"action": "cancel", "filter": {"in_state_longer_than": "P999999999D"}},
            "in_state_longer_than: must be positive and at most 100 years",
        ),
        (
            {"action": "cancel", "filter": {"in_state_longer_than": "-PT1H"}},
            "in_state_longer_than: must be an ISO 8601 duration",
        ),
        (
            {"action": "cancel", "filter": {"created_after": "0001-01-01T00:00:00+14:00"}},
            "created_after: is out of range once converted to UTC",
        ),
        (
            {"action": "cancel", "filter": {"updated_before": 1767225600}},
            "updated_before: must be an ISO 8601 date-time",
        ),
    ],
)
async def test_bad_filters_and_requests_answer_400_naming_them(
    client: httpx.AsyncClient, body: dict[str, Any], names: str
) -> None:
    problem = assert_problem(await client.post("/v1/bulk", json=body), 400)
    assert names in problem["detail"]


async def test_a_bad_body_answers_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/bulk", json={"action": "explode", "filter": {"all": True}})
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["path"] == "action"


async def test_a_reserved_event_type_answers_422_like_a_single_send(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "action": "send_event",
        "filter": {"all": True},
        "event": {"type": "conveyor.cancel", "payload": {}},
        "dry_run": True,
    }
    problem = assert_problem(await client.post("/v1/bulk", json=body), 422)
    (error,) = problem["errors"]
    assert error["path"] == "event.type"
    assert "reserved" in error["message"]


async def test_a_job_created_over_http_keeps_its_duration_and_date_time_filters(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "action": "cancel",
        "filter": {"in_state_longer_than": "PT2H", "created_after": "2026-01-01T02:00:00+02:00"},
    }
    job = (await client.post("/v1/bulk", json=body)).json()
    assert job["filter"] == {
        "in_state_longer_than": "PT2H",
        "created_after": "2026-01-01T00:00:00Z",
    }


async def test_bulk_actions_need_the_admin_scope(client: httpx.AsyncClient, keys: Keys) -> None:
    await orders(client, 1)
    job = (await client.post("/v1/bulk", json={"action": "cancel", "filter": {"all": True}})).json()
    for key in (keys.read, keys.write):
        headers = {"Authorization": f"Bearer {key}"}
        body = {"action": "cancel", "filter": {"all": True}, "dry_run": True}
        assert_problem(await client.post("/v1/bulk", json=body, headers=headers), 403)
        cancel = await client.post(f"/v1/bulk/{job['id']}/cancel", headers=headers)
        assert_problem(cancel, 403)
    read = await client.get(
        f"/v1/bulk/{job['id']}", headers={"Authorization": f"Bearer {keys.read}"}
    )
    assert read.status_code == 200


async def test_unknown_jobs_answer_404_and_bad_ids_400(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert_problem(await client.get(f"/v1/bulk/{missing}"), 404)
    assert_problem(await client.get(f"/v1/bulk/{missing}/items"), 404)
    assert_problem(await client.post(f"/v1/bulk/{missing}/cancel"), 404)
    assert_problem(await client.get("/v1/bulk/not-a-uuid"), 400)
    job = (await client.post("/v1/bulk", json={"action": "cancel", "filter": {"all": True}})).json()
    assert_problem(await client.get(f"/v1/bulk/{job['id']}/items?cursor=x"), 400)
    assert_problem(await client.get(f"/v1/bulk/{job['id']}/items?colour=red"), 400)
