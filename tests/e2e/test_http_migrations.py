"""Migrations over real HTTP: the migrations a workflow declares, a dry run's report over
``test.parcel`` v1 instances (one of each verdict), applying as a job that a job runner
finishes, forcing, cancelling, Idempotency-Key, and the answers to missing scopes, unknown
workflows, migrations and jobs, and bad bodies (never a 500)."""

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
from tests.conftest import wait_for
from tests.e2e.http_support import Keys, serve_in_process
from tests.e2e.test_http_api import assert_problem

MODULES = ["workflows", "tests.evolution_flows"]
PARCELS = "/v1/workflows/test.parcel/instances"
MIGRATIONS = "/v1/workflows/test.parcel/migrations"
V1_TO_V2 = {"from_version": 1, "to_version": 2}


@pytest.fixture
def parcel_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"workflow_modules": MODULES})


@pytest.fixture
async def client(parcel_settings: Settings, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_in_process(parcel_settings) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=30
        ) as http,
    ):
        yield http


async def parcel(
    client: httpx.AsyncClient, key: str, *events: tuple[str, dict[str, Any]]
) -> dict[str, Any]:
    """A ``test.parcel`` v1 instance that went through ``events``."""
    started = await client.post(
        PARCELS, json={"business_key": key, "data": {"key": key}, "version": 1}
    )
    assert started.status_code == 201, started.text
    instance: dict[str, Any] = started.json()
    for event_type, payload in events:
        sent = await client.post(
            f"/v1/instances/{instance['id']}/events", json={"type": event_type, "payload": payload}
        )
        assert sent.status_code == 200, sent.text
        instance = sent.json()["instance"]
    return instance


async def four_parcels(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """One parcel of each verdict: ok (paid 50, packing), diverges (paid 5: v2's guard
    refuses it), unmapped (in manual_review) and invalid_data (its key starts with bad-)."""
    paid = ("parcel.paid", {"amount": 50})
    return {
        "good": await parcel(client, "good-1", paid, ("parcel.packing", {})),
        "cheap": await parcel(client, "cheap-1", ("parcel.paid", {"amount": 5})),
        "flagged": await parcel(client, "flagged-1", ("parcel.flagged", {})),
        "bad": await parcel(client, "bad-1", paid),
    }


async def finish(
    client: httpx.AsyncClient, settings: Settings, db: AsyncEngine, job_id: str
) -> dict[str, Any]:
    """Run a job runner (what every worker does) until the job has completed."""
    runner = JobRunner(Runtime(db, load_workflows(settings.workflow_modules)), batch_size=2)

    async def completed() -> dict[str, Any] | None:
        await runner.run_pending()
        response = await client.get(f"/v1/migrations/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job if job["status"] == "completed" else None

    done: dict[str, Any] = await wait_for(completed, timeout=30, interval=0.1)
    return done


async def count(db: AsyncEngine, sql: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_the_declared_migrations_are_listed(client: httpx.AsyncClient) -> None:
    response = await client.get(MIGRATIONS)
    assert response.status_code == 200, response.text
    forward, back = response.json()["items"]
    assert forward == {
        "name": "test.parcel-v1-to-v2",
        "workflow": "test.parcel",
        "from_version": 1,
        "to_version": 2,
        "description": "Packing is picking now; parcels get a currency.",
        "states": forward["states"],
        "not_migratable": ["manual_review"],
        "upgrades_data": True,
    }
    assert forward["states"]["packing"] == "picking"
    assert "manual_review" not in forward["states"]
    assert (back["from_version"], back["to_version"]) == (2, 1)
    none = await client.get("/v1/workflows/order/migrations")
    assert none.json() == {"items": []}
    assert_problem(await client.get("/v1/workflows/nope/migrations"), 404)
    assert_problem(await client.get(f"{MIGRATIONS}?colour=red"), 400)


async def test_a_dry_run_reports_each_verdict_and_writes_nothing(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    made = await four_parcels(client)
    history = await count(db, "select count(*) from history")

    response = await client.post(MIGRATIONS, json={**V1_TO_V2, "dry_run": True})

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is True
    assert report["migration"]["name"] == "test.parcel-v1-to-v2"
    assert (report["selected"], report["would_migrate"], report["truncated"]) == (4, 1, False)
    assert report["counts"] == {"ok": 1, "diverges": 1, "unmapped": 1, "invalid_data": 1}
    listed = {i["business_key"]: i for i in report["instances"]}
    assert set(listed) == {"cheap-1", "flagged-1", "bad-1"}  # the ok ones are only counted
    cheap = listed["cheap-1"]
    assert cheap["instance_id"] == made["cheap"]["id"]
    assert (cheap["outcome"], cheap["from_state"], cheap["to_state"]) == (
        "diverges",
        "paid",
        "paid",
    )
    assert cheap["divergence"]["event_type"] == "parcel.paid"
    assert cheap["divergence"]["expected"] == "paid"
    assert cheap["divergence"]["reason"]
    flagged = listed["flagged-1"]
    assert (flagged["outcome"], flagged["to_state"]) == ("unmapped", None)
    assert "manual_review" in flagged["reason"]
    bad = listed["bad-1"]
    assert bad["outcome"] == "invalid_data"
    assert "currency" in bad["reason"]
    forced = await client.post(MIGRATIONS, json={**V1_TO_V2, "dry_run": True, "force": True})
    assert forced.json()["would_migrate"] == 2

    assert await count(db, "select count(*) from jobs") == 0
    assert await count(db, "select count(*) from history") == history
    assert await count(db, "select count(*) from instances where version <> 1") == 0


async def test_a_dry_run_judges_only_what_the_filter_selects(client: httpx.AsyncClient) -> None:
    made = await four_parcels(client)

    async def selected(**filters: Any) -> dict[str, Any]:
        body = {**V1_TO_V2, "dry_run": True, "filter": filters}
        response = await client.post(MIGRATIONS, json=body)
        assert response.status_code == 200, response.text
        counts: dict[str, Any] = response.json()["counts"]
        return {k: v for k, v in counts.items() if v}

    assert await selected(states=["packing"]) == {"ok": 1}
    assert await selected(business_key_prefix="cheap") == {"diverges": 1}
    assert await selected(states=["paid"]) == {"diverges": 1, "invalid_data": 1}
    assert await selected(ids=[made["flagged"]["id"]]) == {"unmapped": 1}
    assert await selected(status="failed") == {}


async def test_applying_migrates_the_ok_instances_and_leaves_the_others(
    client: httpx.AsyncClient, parcel_settings: Settings, db: AsyncEngine
) -> None:
    made = await four_parcels(client)

    response = await client.post(MIGRATIONS, json=V1_TO_V2)

    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/migrations/{job['id']}"
    assert (job["migration"], job["workflow"], job["from_version"], job["to_version"]) == (
        "test.parcel-v1-to-v2",
        "test.parcel",
        1,
        2,
    )
    assert (job["status"], job["total"], job["done"], job["force"]) == ("running", 4, 0, False)
    assert "action" not in job
    done = await finish(client, parcel_settings, db, job["id"])
    assert (done["succeeded"], done["skipped"], done["failed"], done["progress"]) == (1, 3, 0, 1.0)

    good = (await client.get(f"/v1/instances/{made['good']['id']}")).json()
    assert (good["version"], good["state"], good["status"]) == (2, "picking", "active")
    assert good["data"]["currency"] == "EUR"
    for name, state in (("cheap", "paid"), ("flagged", "manual_review"), ("bad", "paid")):
        untouched = (await client.get(f"/v1/instances/{made[name]['id']}")).json()
        assert (untouched["version"], untouched["state"]) == (1, state), name
    items = (await client.get(f"/v1/migrations/{job['id']}/items?status=skipped")).json()
    reasons = {i["instance_id"]: i["reason"] for i in items["items"]}
    assert reasons[made["cheap"]["id"]].startswith("diverges: ")
    assert reasons[made["flagged"]["id"]].startswith("unmapped: ")
    assert reasons[made["bad"]["id"]].startswith("invalid_data: ")
    assert items["next_cursor"] is None
    first = (await client.get(f"/v1/migrations/{job['id']}/items?limit=2")).json()
    assert len(first["items"]) == 2
    rest = await client.get(f"/v1/migrations/{job['id']}/items?cursor={first['next_cursor']}")
    assert len(rest.json()["items"]) == 2
    history = (await client.get(f"/v1/instances/{made['good']['id']}/history")).json()
    assert history["items"][-1]["event_type"] == "conveyor.migrate"


async def test_a_forced_migration_moves_the_diverging_instances_too(
    client: httpx.AsyncClient, parcel_settings: Settings, db: AsyncEngine
) -> None:
    made = await four_parcels(client)
    body = {**V1_TO_V2, "force": True, "filter": {"states": ["paid"]}}
    response = await client.post(MIGRATIONS, json=body)
    assert response.status_code == 202, response.text
    done = await finish(client, parcel_settings, db, response.json()["id"])
    assert (done["total"], done["succeeded"], done["skipped"], done["force"]) == (2, 1, 1, True)
    cheap = (await client.get(f"/v1/instances/{made['cheap']['id']}")).json()
    assert (cheap["version"], cheap["state"]) == (2, "paid")


async def test_a_running_migration_job_can_be_cancelled(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    made = await four_parcels(client)
    job = (await client.post(MIGRATIONS, json=V1_TO_V2)).json()

    response = await client.post(f"/v1/migrations/{job['id']}/cancel")

    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert (cancelled["status"], cancelled["skipped"], cancelled["done"]) == ("cancelled", 4, 4)
    items = (await client.get(f"/v1/migrations/{job['id']}/items")).json()["items"]
    assert {i["reason"] for i in items} == {"job cancelled"}
    again = await client.post(f"/v1/migrations/{job['id']}/cancel")
    assert again.json()["status"] == "cancelled"
    good = (await client.get(f"/v1/instances/{made['good']['id']}")).json()
    assert good["version"] == 1
    assert await count(db, "select count(*) from instances where version <> 1") == 0


async def test_an_idempotency_key_makes_creation_safe_to_retry(client: httpx.AsyncClient) -> None:
    await four_parcels(client)
    headers = {"Idempotency-Key": "migrate-1"}
    first = await client.post(MIGRATIONS, json=V1_TO_V2, headers=headers)
    again = await client.post(MIGRATIONS, json=V1_TO_V2, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["location"] == f"/v1/migrations/{first.json()['id']}"
    other = await client.post(MIGRATIONS, json={**V1_TO_V2, "force": True}, headers=headers)
    assert "already names job" in assert_problem(other, 422)["detail"]
    assert_problem(
        await client.post(MIGRATIONS, json=V1_TO_V2, headers={"Idempotency-Key": ""}), 400
    )


async def test_migrations_need_the_admin_scope_to_run_and_read_to_look(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    await four_parcels(client)
    job = (await client.post(MIGRATIONS, json=V1_TO_V2)).json()
    for key in (keys.read, keys.write):
        headers = {"Authorization": f"Bearer {key}"}
        body = {**V1_TO_V2, "dry_run": True}
        assert_problem(await client.post(MIGRATIONS, json=body, headers=headers), 403)
        assert_problem(
            await client.post(f"/v1/migrations/{job['id']}/cancel", headers=headers), 403
        )
    read = {"Authorization": f"Bearer {keys.read}"}
    for path in (MIGRATIONS, f"/v1/migrations/{job['id']}", f"/v1/migrations/{job['id']}/items"):
        assert (await client.get(path, headers=read)).status_code == 200, path
    assert_problem(await client.get(MIGRATIONS, headers={"Authorization": "Bearer nope"}), 401)


async def test_unknown_workflows_migrations_and_jobs_answer_404(client: httpx.AsyncClient) -> None:
    unknown_workflow = await client.post("/v1/workflows/nope/migrations", json=V1_TO_V2)
    assert "nope" in assert_problem(unknown_workflow, 404)["detail"]
    undeclared = await client.post(MIGRATIONS, json={"from_version": 1, "to_version": 3})
    detail = assert_problem(undeclared, 404)["detail"]
    assert "test.parcel v1 -> v2 (test.parcel-v1-to-v2)" in detail  # the declared ones
    order = await client.post("/v1/workflows/order/migrations", json={**V1_TO_V2, "dry_run": True})
    assert_problem(order, 404)
    missing = uuid.uuid4()
    assert_problem(await client.get(f"/v1/migrations/{missing}"), 404)
    assert_problem(await client.get(f"/v1/migrations/{missing}/items"), 404)
    assert_problem(await client.post(f"/v1/migrations/{missing}/cancel"), 404)
    assert_problem(await client.get("/v1/migrations/not-a-uuid"), 400)
    # A bulk job is no migration job (and the other way round).
    bulk = await client.post("/v1/bulk", json={"action": "cancel", "filter": {"all": True}})
    assert bulk.status_code == 202, bulk.text
    assert_problem(await client.get(f"/v1/migrations/{bulk.json()['id']}"), 404)
    migration = (await client.post(MIGRATIONS, json=V1_TO_V2)).json()
    assert_problem(await client.get(f"/v1/bulk/{migration['id']}"), 404)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({**V1_TO_V2, "filter": {"colour": "red"}}, "unknown filter 'colour'"),
        ({**V1_TO_V2, "filter": {"states": ["nowhere"]}}, "declares no state 'nowhere'"),
        ({**V1_TO_V2, "filter": {"states": []}}, "states"),
        ({**V1_TO_V2, "filter": {"status": "asleep"}}, "status"),
        ({**V1_TO_V2, "filter": {"status": "completed"}}, "status"),
        ({**V1_TO_V2, "filter": {"ids": ["x"]}}, "ids"),
        ({**V1_TO_V2, "filter": {"business_key_prefix": ""}}, "business_key_prefix"),
    ],
)
async def test_bad_filters_answer_400_naming_them(
    client: httpx.AsyncClient, body: dict[str, Any], names: str
) -> None:
    for dry_run in (True, False):
        response = await client.post(MIGRATIONS, json={**body, "dry_run": dry_run})
        assert names in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"to_version": 2}, "from_version"),
        ({"from_version": "1", "to_version": 2}, "from_version"),
        ({"from_version": 0, "to_version": 2}, "from_version"),
        ({"from_version": 1, "to_version": 2**31}, "to_version"),
        ({**V1_TO_V2, "dry_run": "yes"}, "dry_run"),
        ({**V1_TO_V2, "colour": "red"}, "colour"),
        ({**V1_TO_V2, "filter": []}, "filter"),
        ({**V1_TO_V2, "filter": {"business_key_prefix": "a\u0000"}}, "filter.business_key_prefix"),
    ],
)
async def test_a_bad_body_answers_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], path: str
) -> None:
    problem = assert_problem(await client.post(MIGRATIONS, json=body), 422)
    assert path in [e["path"] for e in problem["errors"]]


async def test_malformed_requests_answer_4xx_never_500(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(MIGRATIONS, content=b"{not json"), 400)
    assert_problem(await client.post(MIGRATIONS), 400)
    plain = {"Content-Type": "text/plain"}
    assert_problem(await client.post(MIGRATIONS, content=b"{}", headers=plain), 415)
    assert_problem(await client.post(f"{MIGRATIONS}?dry_run=true", json=V1_TO_V2), 400)
    job = (await client.post(MIGRATIONS, json=V1_TO_V2)).json()
    assert_problem(await client.get(f"/v1/migrations/{job['id']}/items?cursor=x"), 400)
    assert_problem(await client.get(f"/v1/migrations/{job['id']}/items?colour=red"), 400)
    assert_problem(await client.get(f"/v1/migrations/{job['id']}/items?limit=0"), 400)
    assert_problem(await client.get(f"/v1/migrations/{job['id']}?verbose=1"), 400)
