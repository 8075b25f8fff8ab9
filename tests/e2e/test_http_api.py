"""The HTTP API over real HTTP against the real PostgreSQL: each endpoint's answers."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.e2e.http_support import Keys, order_data, serve_in_process
from tests.metrics_support import matching, samples, value

PROBLEM = "application/problem+json"


@pytest.fixture
async def client(settings: Settings, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an admin key, talking to the app on a loopback socket."""
    async with (
        serve_in_process(settings) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def start_order(http: httpx.AsyncClient, key: str | None = None) -> dict[str, Any]:
    business_key = key or f"o-{uuid.uuid4().hex[:8]}"
    response = await http.post(
        "/v1/workflows/order/instances",
        json={"business_key": business_key, "data": order_data(business_key)},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


# ---------------------------------------------------------------- workflows


async def test_list_workflows_names_each_with_versions(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workflows")
    assert response.status_code == 200
    names = {w["name"]: w for w in response.json()["items"]}
    assert {"order", "warehouse.inbound", "warehouse.outbound"} <= set(names)
    assert names["order"]["versions"] == [1]
    assert names["order"]["start_event"] == "order.placed"


async def test_describe_workflow_gives_states_transitions_events_and_timers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/workflows/order", params={"version": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "order"
    assert body["version"] == 1
    assert body["versions"] == [1]
    assert body["initial_state"] == "placed"
    assert "payment_timeout" in {t["name"] for t in body["timers"]}
    schema = body["events"]["payment.captured"]["payload_schema"]
    assert "amount" in schema["properties"]


async def test_unknown_workflow_or_version_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/workflows/nope"), 404)
    assert_problem(await client.get("/v1/workflows/order", params={"version": 9}), 404)
    assert_problem(await client.get("/v1/workflows/order", params={"version": "x"}), 400)


async def test_diagram_is_mermaid_and_highlights_an_instances_state(
    client: httpx.AsyncClient,
) -> None:
    plain = await client.get("/v1/workflows/order/diagram")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.text.startswith("stateDiagram-v2")
    instance = await start_order(client)
    marked = await client.get("/v1/workflows/order/diagram", params={"instance": instance["id"]})
    assert "class placed current" in marked.text
    assert_problem(await client.get("/v1/workflows/order/diagram", params={"instance": "bad"}), 400)
    other = await client.get(
        "/v1/workflows/warehouse.inbound/diagram", params={"instance": instance["id"]}
    )
    assert_problem(other, 404)


# ---------------------------------------------------------------- start


async def test_start_answers_201_with_location_and_the_instance(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/workflows/order/instances",
        json={"business_key": "o-201", "data": order_data("o-201")},
    )
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/v1/instances/{body['id']}"
    assert body["state"] == "placed"
    assert body["status"] == "active"
    fetched = await client.get(response.headers["location"])
    assert fetched.json() == body


async def test_start_with_an_existing_business_key_is_409(client: httpx.AsyncClient) -> None:
    await start_order(client, "o-dup")
    again = await client.post(
        "/v1/workflows/order/instances",
        json={"business_key": "o-dup", "data": order_data("o-dup")},
    )
    assert "already exists" in assert_problem(again, 409)["detail"]


async def test_idempotency_key_replays_the_original_response(
    client: httpx.AsyncClient,
) -> None:
    request = {"business_key": "o-idem", "data": order_data("o-idem")}
    headers = {"Idempotency-Key": "idem-1"}
    first = await client.post("/v1/workflows/order/instances", json=request, headers=headers)
    assert first.status_code == 201
    # The instance moves on; a retry still gets the original answer.
    await client.post(
        f"/v1/instances/{first.json()['id']}/events",
        json={"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}},
    )
    retry = await client.post("/v1/workflows/order/instances", json=request, headers=headers)
    assert retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["idempotent-replayed"] == "true"


async def test_idempotency_key_with_a_different_body_is_422(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "idem-2"}
    first = await client.post(
        "/v1/workflows/order/instances",
        json={"business_key": "o-a", "data": order_data("o-a")},
        headers=headers,
    )
    assert first.status_code == 201
    other = await client.post(
        "/v1/workflows/order/instances",
        json={"business_key": "o-b", "data": order_data("o-b")},
        headers=headers,
    )
    assert "different request" in assert_problem(other, 422)["detail"]


async def test_start_with_invalid_data_names_fields_under_data(
    client: httpx.AsyncClient,
) -> None:
    data = order_data("o-bad")
    data["currency"] = "euro"
    response = await client.post(
        "/v1/workflows/order/instances", json={"business_key": "o-bad", "data": data}
    )
    body = assert_problem(response, 422)
    assert "data.currency" in {e["path"] for e in body["errors"]}


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "needs a JSON body"),
        (b'{"business_key": 5, "data": {}}', 422, "business_key"),
        (b'{"business_key": "k", "data": [], "extra": 1}', 422, "extra"),
        (b'{"business_key": "k\\u0000", "data": {}}', 422, "business_key"),
        (b'{"business_key": "k", "data": {"n": 100000000000000000000000}}', 422, "data.n"),
    ],
)
async def test_malformed_start_bodies_are_clear_4xx(
    client: httpx.AsyncClient, content: bytes, status: int, fragment: str
) -> None:
    response = await client.post(
        "/v1/workflows/order/instances",
        content=content,
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, status)
    assert fragment in response.text, body


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"business_key": "k", "data": {"x": "' + b"a" * 1_100_000 + b'"}}'
    response = await client.post(
        "/v1/workflows/order/instances", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413)


async def test_start_of_unknown_workflow_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/workflows/nope/instances", json={"business_key": "k", "data": {}}
    )
    assert_problem(response, 404)


# ---------------------------------------------------------------- read


async def test_get_and_find_by_business_key(client: httpx.AsyncClient) -> None:
    instance = await start_order(client, "o-find")
    by_id = await client.get(f"/v1/instances/{instance['id']}")
    by_key = await client.get("/v1/workflows/order/instances/o-find")
    assert by_id.json() == instance
    assert by_key.json() == {**instance, "earlier": []}  # the key was not reused
    assert_problem(await client.get("/v1/workflows/order/instances/missing"), 404)
    assert_problem(await client.get(f"/v1/instances/{uuid.uuid4()}"), 404)
    bad = assert_problem(await client.get("/v1/instances/not-a-uuid"), 400)
    assert "not a UUID" in bad["detail"]


async def test_list_filters_and_cursor_pagination(client: httpx.AsyncClient) -> None:
    started = [await start_order(client, f"list-{i}") for i in range(5)]
    await start_order(client, "other-1")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"business_key_prefix": "list-", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/instances", params=params)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["id"] for i in reversed(started)]
    by_state = await client.get(
        "/v1/instances", params={"workflow": "order", "state": "placed", "status": "active"}
    )
    assert len(by_state.json()["items"]) == 6
    later = await client.get(
        "/v1/instances", params={"created_after": started[-1]["created_at"], "limit": 10}
    )
    assert {i["business_key"] for i in later.json()["items"]} == {"list-4", "other-1"}
    none = await client.get("/v1/instances", params={"updated_before": "2000-01-01T00:00:00Z"})
    assert none.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "garbage!"},
        {"limit": 0},
        {"limit": "many"},
        {"status": "sleeping"},
        {"created_after": "yesterday"},
    ],
)
async def test_bad_list_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    assert_problem(await client.get("/v1/instances", params=params), 400)


# ---------------------------------------------------------------- events


async def test_event_applied_then_duplicate_by_body_id(client: httpx.AsyncClient) -> None:
    instance = await start_order(client)
    event = {"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}}
    url = f"/v1/instances/{instance['id']}/events"
    first = await client.post(url, json={**event, "id": "evt-1"})
    assert first.status_code == 200
    outcome = first.json()["outcome"]
    assert outcome["status"] == "applied"
    assert (outcome["from_state"], outcome["to_state"]) == ("placed", "payment_pending")
    assert first.json()["instance"]["state"] == "payment_pending"
    again = await client.post(url, json={**event, "id": "evt-1"})
    assert again.status_code == 200
    dup = again.json()["outcome"]
    assert dup["status"] == "duplicate"
    assert dup["original_status"] == "applied"
    assert dup["to_state"] == "payment_pending"
    assert again.json()["instance"]["revision"] == first.json()["instance"]["revision"]


async def test_event_id_from_idempotency_key_header(client: httpx.AsyncClient) -> None:
    instance = await start_order(client)
    url = f"/v1/instances/{instance['id']}/events"
    event = {"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}}
    first = await client.post(url, json=event, headers={"Idempotency-Key": "hdr-1"})
    assert first.json()["outcome"]["event_id"] == "hdr-1"
    again = await client.post(url, json=event, headers={"Idempotency-Key": "hdr-1"})
    assert again.json()["outcome"]["status"] == "duplicate"
    clash = await client.post(url, json={**event, "id": "a"}, headers={"Idempotency-Key": "b"})
    assert_problem(clash, 400)


async def test_event_not_allowed_is_409_listing_allowed_events(
    client: httpx.AsyncClient,
) -> None:
    instance = await start_order(client)
    response = await client.post(
        f"/v1/instances/{instance['id']}/events", json={"type": "order.packed"}
    )
    body = assert_problem(response, 409)
    assert body["reason"] == "not_allowed"
    assert body["state"] == "placed"
    assert set(body["allowed_events"]) == {"payment.initiated", "order.cancellation_requested"}


async def test_event_with_invalid_payload_is_422_with_field_paths(
    client: httpx.AsyncClient,
) -> None:
    instance = await start_order(client)
    response = await client.post(
        f"/v1/instances/{instance['id']}/events",
        json={"type": "payment.initiated", "payload": {"provider": 5}},
    )
    body = assert_problem(response, 422)
    paths = {e["path"] for e in body["errors"]}
    assert {"payload.payment_id", "payload.provider"} <= paths


async def test_event_errors_for_missing_instance_bad_id_and_bad_body(
    client: httpx.AsyncClient,
) -> None:
    assert_problem(
        await client.post(f"/v1/instances/{uuid.uuid4()}/events", json={"type": "x"}), 404
    )
    assert_problem(await client.post("/v1/instances/42/events", json={"type": "x"}), 400)
    instance = await start_order(client)
    url = f"/v1/instances/{instance['id']}/events"
    assert_problem(await client.post(url, json={"type": ""}), 422)
    assert_problem(await client.post(url, json={"payload": {}}), 422)
    broken = await client.post(url, content=b"[1,", headers={"content-type": "application/json"})
    assert_problem(broken, 400)


async def test_event_ids_are_unique_per_instance_so_nobody_can_squat_them(
    client: httpx.AsyncClient,
) -> None:
    a, b = await start_order(client), await start_order(client)
    event = {"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}}
    url_a, url_b = f"/v1/instances/{a['id']}/events", f"/v1/instances/{b['id']}/events"
    # Used first on A, in an event A refuses (409): B's event of that id still applies.
    squat = {"type": "order.packed", "id": "shared"}
    assert_problem(await client.post(url_a, json=squat), 409)
    applied = await client.post(url_b, json={**event, "id": "shared"})
    assert applied.status_code == 200, applied.text
    assert applied.json()["outcome"]["status"] == "applied"
    assert applied.json()["instance"]["state"] == "payment_pending"
    # Redeliveries to the same instance are still duplicates, each answered as before.
    again = await client.post(url_b, json={**event, "id": "shared"})
    assert (again.status_code, again.json()["outcome"]["status"]) == (200, "duplicate")
    assert again.json()["outcome"]["original_status"] == "applied"
    assert "rejected before" in assert_problem(await client.post(url_a, json=squat), 409)["detail"]
    # An id applied on one instance applies on another too.
    c = await start_order(client)
    other = await client.post(f"/v1/instances/{c['id']}/events", json={**event, "id": "shared"})
    assert other.json()["outcome"]["status"] == "applied", other.text


# ---------------------------------------------------------------- history, cancel, retry


async def test_history_pages_by_last_id_and_carries_request_ids(
    client: httpx.AsyncClient,
) -> None:
    instance = await start_order(client)
    url = f"/v1/instances/{instance['id']}"
    await client.post(
        f"{url}/events",
        json={"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}},
        headers={"X-Request-ID": "req-history-1"},
    )
    await client.post(f"{url}/events", json={"type": "order.packed"})
    first = (await client.get(f"{url}/history", params={"limit": 2})).json()
    assert [e["outcome"] for e in first["items"]] == ["started", "applied"]
    assert first["items"][1]["request_id"] == "req-history-1"
    rest = (await client.get(f"{url}/history", params={"cursor": first["next_cursor"]})).json()
    assert [e["outcome"] for e in rest["items"]] == ["rejected"]
    assert rest["next_cursor"] is None
    assert_problem(await client.get(f"{url}/history", params={"cursor": "x"}), 400)
    assert_problem(await client.get(f"/v1/instances/{uuid.uuid4()}/history"), 404)


async def test_cancel_then_events_are_refused(client: httpx.AsyncClient) -> None:
    instance = await start_order(client)
    url = f"/v1/instances/{instance['id']}"
    cancelled = await client.post(
        f"{url}/cancel", json={"reason": "customer called", "status_only": True}
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["mode"] == "status"
    assert cancelled.json()["instance"]["status"] == "cancelled"
    assert cancelled.json()["instance"]["state"] == "placed"
    again = await client.post(f"{url}/cancel")
    assert (again.status_code, again.json()["mode"]) == (200, "already")
    refused = await client.post(f"{url}/events", json={"type": "payment.initiated"})
    assert assert_problem(refused, 409)["reason"] == "inactive"
    assert_problem(await client.post(f"/v1/instances/{uuid.uuid4()}/cancel"), 404)


async def test_retry_of_an_active_instance_is_409_and_of_a_failed_one_reapplies(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    instance = await start_order(client)
    url = f"/v1/instances/{instance['id']}"
    assert_problem(await client.post(f"{url}/retry"), 409)
    # Make the instance failed as the runtime would after an action kept raising.
    error = (
        '{"event_id": "evt-f", "event_type": "payment.initiated", "source": "http",'
        ' "trigger": "event", "payload": {"payment_id": "p", "provider": "x"}}'
    )
    async with db.begin() as conn:
        await conn.execute(
            text("update instances set status = 'failed', error = cast(:e as jsonb) where id = :i"),
            {"e": error, "i": instance["id"]},
        )
    retried = await client.post(f"{url}/retry")
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert body["outcome"]["status"] == "applied"
    assert body["instance"]["status"] == "active"
    assert body["instance"]["state"] == "payment_pending"


# ---------------------------------------------------------------- tracing, metrics, docs


async def test_request_id_is_returned_generated_or_echoed(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/v1/workflows", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/v1/workflows")
    again = await client.get("/v1/workflows")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert again.headers["x-request-id"] != generated.headers["x-request-id"]
    insane = await client.get("/v1/workflows", headers={"X-Request-ID": "a b\tc" * 50})
    assert insane.headers["x-request-id"] != "a b\tc" * 50
    problem = await client.get("/v1/instances/nope", headers={"X-Request-ID": "err-1"})
    assert problem.headers["x-request-id"] == "err-1"
    assert problem.json()["request_id"] == "err-1"


async def test_metrics_expose_transitions_rejections_latency_and_outbox_backlog(
    client: httpx.AsyncClient,
) -> None:
    instance = await start_order(client)
    await client.post(f"/v1/instances/{instance['id']}/events", json={"type": "order.packed"})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    page = samples(response.text)
    transitions = "conveyor_transitions_total"
    assert value(page, transitions, workflow="order", outcome="started", source="http") == 1
    assert value(page, transitions, workflow="order", outcome="rejected", source="http") == 1
    assert value(page, "conveyor_rejections_total", workflow="order", reason="not_allowed") == 1
    assert matching(page, "conveyor_runtime_call_duration_seconds_bucket", operation="start")
    # Every transaction is observed: the start's and the rejected event's.
    assert value(page, "conveyor_commit_duration_seconds_count") >= 2
    assert value(page, "conveyor_decision_duration_seconds_count") >= 2
    assert matching(page, "conveyor_transaction_triggers_bucket")
    assert value(page, "conveyor_outbox_backlog_messages") >= 1
    assert matching(page, "conveyor_outbox_oldest_unpublished_age_seconds")
    assert matching(page, "conveyor_timers_overdue")
    assert value(page, "conveyor_http_requests_total", route="/v1/workflows/<name:str>/instances")
    assert "# TYPE conveyor_http_request_duration_seconds histogram" in lines
    # Every metric says what it is.
    typed = {line.split()[2] for line in lines if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in lines if line.startswith("# HELP ") and line.split()[3:]}
    assert typed <= helped


async def test_docs_and_openapi_document_need_no_key(settings: Settings) -> None:
    async with serve_in_process(settings) as base, httpx.AsyncClient(base_url=base) as http:
        spec = await http.get("/docs/openapi.json")
        docs = await http.get("/docs")
        health = await http.get("/health")
    assert spec.status_code == 200
    assert docs.status_code == 200
    assert health.status_code == 200
    document = spec.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/instances/{instance_id}/events" in document["paths"]
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    start = document["paths"]["/v1/workflows/{name}/instances"]["post"]
    assert {"201", "401", "403", "409", "422"} <= set(start["responses"])
