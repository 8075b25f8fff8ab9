"""The console's dead letter, workflow and bulk pages over real HTTP against the test's
schema: list, read, replay with a corrected payload and discard dead letters; workflow
definitions (dotted names, versions, migrations); a bulk cancel of a filtered set from its
dry-run count to a completed job; and what a read-only key sees and may do."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.bulk_runner import JobRunner
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from tests.conftest import wait_for
from tests.dead_letter_support import cloud_event, dead_letter, stored
from tests.e2e.http_support import Keys, order_data, serve_in_process

PAYMENT = {"payment_id": "p-1", "provider": "card"}
MODULES = ["workflows", "tests.evolution_flows"]
NONCE = re.compile(r'name="nonce" value="([0-9a-f]{32})"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def signed_in(base: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to the console at ``base`` (its cookie jar holds the session)."""
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Origin": base}) as client:
        response = await client.post("/ui/login", data={"api_key": api_key, "next": "/ui/"})
        assert response.status_code == 303, response.text
        yield client


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


@pytest.fixture
async def api(base: str, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=30
    ) as http:
        yield http


async def start_order(api: httpx.AsyncClient, key: str, customer: str = "c-1") -> dict[str, Any]:
    response = await api.post(
        "/v1/workflows/order/instances",
        json={"business_key": key, "data": {**order_data(key), "customer_id": customer}},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def text_of(response: httpx.Response) -> str:
    """The page's text with entities decoded (JSON in the page is HTML-escaped)."""
    return html.unescape(response.text)


async def test_dead_letters_list_detail_replay_with_a_corrected_payload_and_discard(
    api: httpx.AsyncClient, base: str, keys: Keys, settings: Settings, db: AsyncEngine
) -> None:
    topic = f"{settings.topic_prefix}.in"
    key = f"DL-{uuid.uuid4().hex[:6]}"
    instance = await start_order(api, key)
    bad = await stored(
        db,
        dead_letter(
            topic,
            cloud_event("e-pay", "payment.initiated", key, {"provider": ""}),
            "invalid_payload",
        ),
    )
    noise = await stored(
        db,
        dead_letter(topic, cloud_event("e-tp", "order.teleported", key, {}), "unknown_type"),
    )
    async with signed_in(base, keys.admin) as console:
        listed = await console.get("/ui/dead-letters")
        assert listed.status_code == 200, listed.text
        page = text_of(listed)
        assert f'href="/ui/dead-letters/{bad.id}"' in page
        assert f'href="/ui/dead-letters/{noise.id}"' in page
        assert page.index(f"/ui/dead-letters/{noise.id}") < page.index(f"/ui/dead-letters/{bad.id}")
        assert "/ui/dead-letters?status=pending&reason=invalid_payload" in page  # counts
        filtered = await console.get("/ui/dead-letters", params={"reason": "unknown_type"})
        assert f"/ui/dead-letters/{noise.id}" in filtered.text
        assert f'/ui/dead-letters/{bad.id}"' not in filtered.text
        paged = await console.get("/ui/dead-letters", params={"limit": 1})
        assert 'rel="next"' in paged.text
        # The filter form's empty fields are tidied away; a bad filter is a 400 page.
        tidy = await console.get("/ui/dead-letters", params={"status": "", "reason": "x"})
        assert (tidy.status_code, tidy.headers["location"]) == (302, "/ui/dead-letters?reason=x")
        assert (await console.get("/ui/dead-letters", params={"status": "lost"})).status_code == 400
        assert (await console.get("/ui/dead-letters", params={"nope": "1"})).status_code == 400

        url = f"/ui/dead-letters/{bad.id}"
        detail = await console.get(url)
        assert detail.status_code == 200
        page = text_of(detail)
        for shown in ("invalid_payload", topic, "e-pay", "payment.initiated", key):
            assert shown in page, shown
        assert '"specversion": "1.0"' in page  # the value, pretty JSON
        assert 'id="replay-edited"' in page
        prefilled = re.search(
            r'<textarea id="replay-data" name="data"[^>]*>(.*?)</textarea>', page, re.S
        )
        assert prefilled is not None
        assert '"provider": ""' in prefilled.group(1)
        token = csrf_of(detail.text)

        # Invalid JSON is refused on the page; nothing is replayed.
        broken = await console.post(
            f"{url}/replay", data={"csrf": token, "mode": "edited", "data": '{"provider": '}
        )
        assert broken.status_code == 422
        assert "not valid JSON" in broken.text
        assert '{"provider": ' in text_of(broken)  # the edit is kept
        # As stored it still fails: 422, still pending, the attempt listed.
        as_is = await console.post(f"{url}/replay", data={"csrf": token, "mode": "as_is"})
        assert as_is.status_code == 422
        assert "Still not applied (invalid_payload)" in as_is.text
        assert 'id="attempts"' in as_is.text
        assert 'id="letter-status">pending' in as_is.text

        fixed = await console.post(
            f"{url}/replay",
            data={
                "csrf": token,
                "mode": "edited",
                "data": '{"payment_id": "p-1", "provider": "card"}',
            },
        )
        assert fixed.status_code == 303, fixed.text
        assert fixed.headers["location"] == f"{url}?done=replayed"
        after = await console.get(fixed.headers["location"])
        page = text_of(after)
        assert 'id="letter-status">replayed' in page
        assert "Outcome <strong>applied</strong>" in page
        assert "payment_pending" in page
        assert 'id="actions"' not in page  # resolved: nothing left to do
        now = (await api.get(f"/v1/instances/{instance['id']}")).json()
        assert now["state"] == "payment_pending"
        again = await console.post(f"{url}/replay", data={"csrf": token, "mode": "as_is"})
        assert again.status_code == 409

        discarded = await console.post(
            f"/ui/dead-letters/{noise.id}/discard", data={"csrf": token, "reason": "test noise"}
        )
        assert discarded.status_code == 303
        page = text_of(await console.get(discarded.headers["location"]))
        assert 'id="letter-status">discarded' in page
        assert "Reason: test noise" in page
        assert (await console.get("/ui/dead-letters/999999")).status_code == 404
        assert (await console.get("/ui/dead-letters/abc")).status_code == 400


async def test_workflow_pages_show_definitions_versions_and_migrations(
    settings: Settings, keys: Keys
) -> None:
    parcel_settings = settings.model_copy(update={"workflow_modules": MODULES})
    async with serve_in_process(parcel_settings) as base, signed_in(base, keys.read) as console:
        listed = await console.get("/ui/workflows")
        assert listed.status_code == 200
        for name in ("order", "test.parcel", "warehouse.inbound"):
            assert f'href="/ui/workflows/{name}"' in listed.text
        assert 'href="/ui/workflows/test.parcel?version=1"' in listed.text

        latest = await console.get("/ui/workflows/test.parcel")
        assert latest.status_code == 200, latest.text
        page = text_of(latest)
        assert 'test.parcel <span class="muted">v2</span>' in page
        assert '<pre class="mermaid" id="diagram">stateDiagram-v2' in page
        assert "/ui/static/vendor/mermaid.min.js" in page
        assert 'id="migrations"' in page
        assert "v1</a> → <a" in page  # the declared migrations, linked by version
        first = await console.get("/ui/workflows/test.parcel", params={"version": 1})
        assert 'test.parcel <span class="muted">v1</span>' in text_of(first)

        order = text_of(await console.get("/ui/workflows/order"))
        assert "payment.initiated" in order
        assert '"properties"' in order  # payload schemas, pretty JSON
        assert 'id="states"' in order
        assert 'id="transitions"' in order
        inbound = await console.get("/ui/workflows/warehouse.inbound")
        assert inbound.status_code == 200

        assert (await console.get("/ui/workflows/nope.nothing")).status_code == 404
        bad = await console.get("/ui/workflows/order", params={"version": "x"})
        assert bad.status_code == 400
        assert (await console.get("/ui/workflows/order", params={"v": "1"})).status_code == 400
        assert (await console.get("/ui/workflows/order", params={"version": 9})).status_code == 404


async def test_bulk_cancel_of_a_filtered_set_from_dry_run_to_a_completed_job(
    api: httpx.AsyncClient, base: str, keys: Keys, settings: Settings, db: AsyncEngine
) -> None:
    targets = [await start_order(api, f"A-{i}") for i in range(3)]
    other_customer = await start_order(api, "A-9", customer="c-9")
    other_prefix = await start_order(api, "B-1")
    async with signed_in(base, keys.admin) as console:
        listed = await console.get(
            "/ui/instances", params={"workflow": "order", "business_key_prefix": "A-"}
        )
        assert "Cancel or retry all matches" in listed.text
        query = {
            "workflow": "order",
            "business_key_prefix": "A-",
            "data.customer_id": "c-1",
            "cursor": "",
        }
        preview = await console.get("/ui/bulk", params=query)
        assert preview.status_code == 200, preview.text
        assert '<strong id="match-count">3</strong>' in preview.text
        assert 'data-confirm="Cancel all 3 matching instances?"' in preview.text
        for made in targets:
            assert made["id"] in preview.text
        assert other_customer["id"] not in preview.text
        token = csrf_of(preview.text)
        nonce = NONCE.search(preview.text)
        assert nonce is not None
        form = {
            "csrf": token,
            "action": "cancel",
            "filter": "workflow=order&business_key_prefix=A-&data.customer_id=c-1",
            "reason": "console test",
            "nonce": nonce.group(1),
        }
        created = await console.post("/ui/bulk", data=form)
        assert created.status_code == 303, created.text
        job_url = created.headers["location"]
        assert re.fullmatch(r"/ui/bulk/[0-9a-f-]{36}", job_url)
        # The same form sent twice makes one job.
        twice = await console.post("/ui/bulk", data=form)
        assert twice.headers["location"] == job_url

        progress = await console.get(job_url)
        assert progress.status_code == 200
        assert f'data-poll="{job_url}.json"' in progress.text
        assert "<progress" in progress.text
        runner = JobRunner(Runtime(db, load_workflows(settings.workflow_modules)), batch_size=2)

        async def completed() -> dict[str, Any] | None:
            await runner.run_pending()
            response = await console.get(f"{job_url}.json")
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            return job if job["status"] == "completed" else None

        job = await wait_for(completed)
        assert (job["total"], job["done"], job["succeeded"], job["action"]) == (3, 3, 3, "cancel")
        assert job["spec"]["reason"] == "console test"
        done = await console.get(job_url)
        assert 'id="job-status">completed' in done.text
        for made in targets:
            assert (await api.get(f"/v1/instances/{made['id']}")).json()["status"] == "cancelled"
        for kept in (other_customer, other_prefix):
            assert (await api.get(f"/v1/instances/{kept['id']}")).json()["status"] == "active"

        # A running job can be stopped: what it has not reached is skipped.
        retry = await console.post(
            "/ui/bulk", data={"csrf": token, "action": "retry", "filter": "business_key_prefix=B-"}
        )
        retry_url = retry.headers["location"]
        running = await console.get(retry_url)
        assert 'id="stop-job"' in running.text
        stopped = await console.post(f"{retry_url}/stop", data={"csrf": token})
        assert (stopped.status_code, stopped.headers["location"]) == (303, retry_url)
        job = (await console.get(f"{retry_url}.json")).json()
        assert (job["status"], job["total"], job["skipped"]) == ("cancelled", 1, 1)
        assert "job cancelled" in (await console.get(retry_url)).text

        # An empty filter, an unknown one or a bad value: a 400 page, nothing created.
        assert (await console.get("/ui/bulk")).status_code == 400
        assert (await console.get("/ui/bulk", params={"colour": "red"})).status_code == 400
        assert (await console.get("/ui/bulk", params={"version": "x"})).status_code == 400
        bad_action = await console.post("/ui/bulk", data={**form, "action": "explode"})
        assert bad_action.status_code == 400
        assert (await console.get("/ui/bulk/not-a-job.json")).status_code == 400
        assert (await console.get(f"/ui/bulk/{uuid.uuid4()}")).status_code == 404


async def test_a_read_only_key_sees_no_actions_and_forged_posts_are_refused(
    api: httpx.AsyncClient, base: str, keys: Keys, settings: Settings, db: AsyncEngine
) -> None:
    key = f"RO-{uuid.uuid4().hex[:6]}"
    await start_order(api, key)
    letter = await stored(
        db,
        dead_letter(
            f"{settings.topic_prefix}.in",
            cloud_event("ro-1", "payment.initiated", key, {"provider": ""}),
            "invalid_payload",
        ),
    )
    async with signed_in(base, keys.read) as reader:
        detail = await reader.get(f"/ui/dead-letters/{letter.id}")
        assert detail.status_code == 200
        assert 'id="actions"' not in detail.text
        assert "/replay" not in detail.text
        assert "/discard" not in detail.text
        listed = await reader.get("/ui/instances", params={"workflow": "order"})
        assert "/ui/bulk" not in listed.text
        assert (await reader.get("/ui/bulk", params={"workflow": "order"})).status_code == 403
        token = csrf_of(detail.text)  # the sign-out form's: a valid token, a read-only key
        for path, form in (
            (f"/ui/dead-letters/{letter.id}/replay", {"mode": "as_is"}),
            (f"/ui/dead-letters/{letter.id}/discard", {"reason": "x"}),
            ("/ui/bulk", {"action": "cancel", "filter": "workflow=order"}),
        ):
            refused = await reader.post(path, data={"csrf": token, **form})
            assert refused.status_code == 403, (path, refused.text)
    async with signed_in(base, keys.admin) as admin:
        # An admin's session without its CSRF token (a forged cross-site form): 403.
        forged = await admin.post(f"/ui/dead-letters/{letter.id}/discard", data={"reason": "x"})
        assert forged.status_code == 403
        wrong = await admin.post(
            f"/ui/dead-letters/{letter.id}/discard", data={"csrf": "forged", "reason": "x"}
        )
        assert wrong.status_code == 403
        page = await admin.get(f"/ui/dead-letters/{letter.id}")
        assert 'id="letter-status">pending' in page.text
