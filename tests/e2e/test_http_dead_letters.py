"""``/v1/dead-letters`` over HTTP: list with filters and a cursor, read, replay (applied
once under the same CloudEvent id; 422 and still pending when it cannot apply), discard;
and an event refused for its payload keeps its id usable over HTTP too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.messaging.routing import DeadLetterReason
from engine.settings import Settings
from engine.store import dead_letters as store
from engine.wire.cloudevents import encode_structured
from tests.conftest import wait_for
from tests.dead_letter_support import cloud_event, dead_letter, stored
from tests.e2e.http_support import Keys, order_data
from tests.integration.test_worker import history_counts, order_events, produce, running_worker

PAYMENT = {"payment_id": "p-1", "provider": "card"}


@pytest.fixture
async def admin(base: str, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=15
    ) as http:
        yield http


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def start_order(http: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await http.post(
        "/v1/workflows/order/instances", json={"business_key": key, "data": order_data(key)}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_listing_filters_pages_and_refuses_unknown_parameters(
    admin: httpx.AsyncClient, base: str, keys: Keys, settings: Settings, db: AsyncEngine
) -> None:
    topic = f"{settings.topic_prefix}.in"
    reasons: list[DeadLetterReason] = ["invalid_payload", "no_instance", "invalid_payload"]
    await store.record(
        db,
        [
            dead_letter(topic, cloud_event(f"l-{i}", "payment.initiated", f"K-{i % 2}", {}), reason)
            for i, reason in enumerate(reasons)
        ],
    )
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {keys.read}"}
    ) as reader:
        everything = await reader.get("/v1/dead-letters")
        assert everything.status_code == 200, everything.text
        assert [i["event_id"] for i in everything.json()["items"]] == ["l-2", "l-1", "l-0"]
        first = await reader.get("/v1/dead-letters", params={"limit": 2})
        assert [i["event_id"] for i in first.json()["items"]] == ["l-2", "l-1"]
        cursor = first.json()["next_cursor"]
        rest = await reader.get("/v1/dead-letters", params={"limit": 2, "cursor": cursor})
        assert [i["event_id"] for i in rest.json()["items"]] == ["l-0"]
        assert rest.json()["next_cursor"] is None
        filtered = await reader.get(
            "/v1/dead-letters",
            params={
                "reason": "invalid_payload",
                "workflow": "order",
                "business_key": "K-0",
                "status": "pending",
                "topic": topic,
                "since": "2000-01-01T00:00:00Z",
                "until": "2999-01-01T00:00:00",
            },
        )
        assert [i["event_id"] for i in filtered.json()["items"]] == ["l-2", "l-0"]
        item = filtered.json()["items"][0]
        assert item["status"] == "pending"
        assert item["seen_count"] == 1
        assert "value" not in item  # the list is a summary; the message is in the detail

        unknown = assert_problem(
            await reader.get("/v1/dead-letters", params={"reasn": "x", "limit": "0"}), 400
        )
        assert {e["path"] for e in unknown["errors"]} == {"reasn", "limit"}
        for bad in ({"since": "yesterday"}, {"status": "lost"}, {"cursor": "abc"}):
            problem = assert_problem(await reader.get("/v1/dead-letters", params=bad), 400)
            assert problem["errors"][0]["path"] == next(iter(bad))
        # Reading needs read; acting needs admin.
        forbidden = await reader.post(f"/v1/dead-letters/{item['id']}/discard")
        assert_problem(forbidden, 403)


async def test_a_dead_letter_shows_its_message_and_unknown_ids_are_404(
    admin: httpx.AsyncClient, settings: Settings, db: AsyncEngine
) -> None:
    topic = f"{settings.topic_prefix}.in"
    event = cloud_event("s-1", "payment.initiated", "S-1", {"provider": ""})
    text = await stored(db, dead_letter(topic, event, "invalid_payload"))
    binary = await stored(
        db,
        dead_letter(
            topic, None, "undecodable", value=b"\xff\x00", key=b"S-2", headers=(("h", b"\xfe"),)
        ),
    )
    shown = await admin.get(f"/v1/dead-letters/{text.id}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["value_encoding"] == "utf-8"
    assert body["value"] == (text.value or b"").decode()
    assert body["key"] == "S-1"
    assert body["headers"] == [["content-type", "application/cloudevents+json"]]
    assert (body["reason"], body["workflow"], body["business_key"]) == (
        "invalid_payload",
        "order",
        "S-1",
    )
    assert body["resolution"] is None
    raw = (await admin.get(f"/v1/dead-letters/{binary.id}")).json()
    assert (raw["value"], raw["value_encoding"]) == ("/wA=", "base64")
    assert raw["headers"] == [["h", {"base64": "/g=="}]]
    assert_problem(await admin.get(f"/v1/dead-letters/{binary.id + 100}"), 404)
    assert_problem(await admin.get("/v1/dead-letters/abc"), 400)
    assert_problem(await admin.get("/v1/dead-letters/0"), 400)
    assert_problem(await admin.post(f"/v1/dead-letters/{binary.id + 100}/replay"), 404)


async def test_replay_applies_a_fix_once_refuses_what_still_fails_and_discard_ends_it(
    admin: httpx.AsyncClient, settings: Settings, db: AsyncEngine
) -> None:
    topic = f"{settings.topic_prefix}.in"
    key = f"R-{uuid.uuid4().hex[:6]}"
    instance = await start_order(admin, key)
    event = cloud_event("h-1", "payment.initiated", key, {"provider": ""})
    letter = await stored(db, dead_letter(topic, event, "invalid_payload"))
    url = f"/v1/dead-letters/{letter.id}"

    as_is = assert_problem(await admin.post(f"{url}/replay"), 422)
    assert as_is["reason"] == "invalid_payload"
    assert as_is["dead_letter_id"] == letter.id
    assert as_is["event_id"] == "h-1"
    pending = (await admin.get(url)).json()
    assert pending["status"] == "pending"
    assert len(pending["resolution"]["attempts"]) == 1

    both = await admin.post(f"{url}/replay", json={"value": {}, "data": {}})
    assert assert_problem(both, 422)["errors"][0]["path"] == "value"
    unstorable = await admin.post(f"{url}/replay", json={"data": {"provider": "a\u0000"}})
    assert_problem(unstorable, 422)

    fixed = await admin.post(
        f"{url}/replay", json={"data": PAYMENT}, headers={"X-Request-ID": "replay-1"}
    )
    assert fixed.status_code == 200, fixed.text
    body = fixed.json()
    assert body["status"] == "replayed"
    assert body["resolved_by"] == "replay-1"
    resolution = body["resolution"]
    assert (resolution["status"], resolution["event_id"]) == ("applied", "h-1")
    assert resolution["instance_id"] == instance["id"]
    assert resolution["to_state"] == "payment_pending"
    now = (await admin.get(f"/v1/instances/{instance['id']}")).json()
    assert now["state"] == "payment_pending"
    history = (await admin.get(f"/v1/instances/{instance['id']}/history")).json()["items"]
    # The replay as stored was refused (in the history), the fixed one applied.
    assert [h["outcome"] for h in history if h["event_id"] == "h-1"] == ["rejected", "applied"]

    # The same request again: the same answer, nothing applied twice. Another: 409.
    repeat = await admin.post(
        f"{url}/replay", json={"data": PAYMENT}, headers={"X-Request-ID": "replay-1"}
    )
    assert repeat.status_code == 200
    assert repeat.json()["resolution"] == resolution
    conflict = assert_problem(await admin.post(f"{url}/replay"), 409)
    assert conflict["dead_letter_status"] == "replayed"
    assert_problem(await admin.post(f"{url}/discard"), 409)

    other = await stored(
        db, dead_letter(topic, cloud_event("h-2", "order.teleported", key, {}), "unknown_type")
    )
    discarded = await admin.post(f"/v1/dead-letters/{other.id}/discard", json={"reason": "noise"})
    assert discarded.status_code == 200, discarded.text
    assert discarded.json()["status"] == "discarded"
    assert discarded.json()["resolution"]["reason"] == "noise"
    assert_problem(await admin.post(f"/v1/dead-letters/{other.id}/discard"), 409)
    assert_problem(await admin.post(f"/v1/dead-letters/{other.id}/replay"), 409)
    listed = await admin.get("/v1/dead-letters", params={"status": "discarded"})
    assert [i["id"] for i in listed.json()["items"]] == [other.id]


async def test_an_event_refused_for_its_payload_can_be_sent_again_fixed_with_its_id(
    admin: httpx.AsyncClient,
) -> None:
    instance = await start_order(admin, f"H-{uuid.uuid4().hex[:6]}")
    url = f"/v1/instances/{instance['id']}/events"
    bad = {"type": "payment.initiated", "id": "fix-me", "payload": {"provider": ""}}
    assert_problem(await admin.post(url, json=bad), 422)
    assert_problem(await admin.post(url, json=bad), 422)  # refused again, not a duplicate
    fixed = await admin.post(url, json={**bad, "payload": PAYMENT})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["outcome"]["status"] == "applied"
    again = await admin.post(url, json={**bad, "payload": PAYMENT})
    assert again.json()["outcome"]["status"] == "duplicate"


async def test_a_kafka_dead_letter_replayed_with_a_fix_over_http_is_applied_exactly_once(
    admin: httpx.AsyncClient,
    settings: Settings,
    db: AsyncEngine,
    kafka_admin: AIOKafkaAdminClient,
) -> None:
    topic = f"{settings.topic_prefix}.in"
    key = f"K-{uuid.uuid4().hex[:6]}"
    bad = cloud_event("k-pay", "payment.initiated", key, {"provider": ""})
    value, headers = encode_structured(bad)
    try:
        async with running_worker(settings) as metrics:
            await produce(
                settings, topic, [order_events(key)[0], ("", key.encode(), value, headers)]
            )

            async def recorded() -> list[dict[str, Any]]:
                page = await admin.get(
                    "/v1/dead-letters", params={"reason": "invalid_payload", "business_key": key}
                )
                items: list[dict[str, Any]] = page.json()["items"]
                return items

            (letter,) = await wait_for(recorded)
            assert letter["event_id"] == "k-pay"
            replayed = await admin.post(
                f"/v1/dead-letters/{letter['id']}/replay", json={"data": PAYMENT}
            )
            assert replayed.status_code == 200, replayed.text
            assert replayed.json()["resolution"]["to_state"] == "payment_pending"
            # The corrected event arrives over Kafka too, with the same id: a duplicate.
            fixed = cloud_event("k-pay", "payment.initiated", key, PAYMENT)
            fixed_value, fixed_headers = encode_structured(fixed)
            await produce(settings, topic, [("", key.encode(), fixed_value, fixed_headers)])
            await wait_for(lambda: _duplicates(metrics))
        counts = await history_counts(db)
        assert counts["k-pay"] == 2  # the refusal (history keeps it) and one application
        instance = (await admin.get(f"/v1/workflows/order/instances/{key}")).json()
        assert instance["state"] == "payment_pending"
    finally:
        names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
        if names:
            await kafka_admin.delete_topics(names)


async def _duplicates(metrics: Any) -> bool:
    return bool(metrics.duplicates >= 1)
