"""Dead letters in PostgreSQL: recorded once, listed, replayed through the runtime (applied
once, under the same CloudEvent id), discarded; an invalid payload never uses up its id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import deadletters
from engine.deadletters import Correction, DeadLetterNotFound, DeadLetterResolved, ReplayFailed
from engine.messaging.routing import DeadLetterReason
from engine.model import Event
from engine.runtime import Runtime
from engine.store import dead_letters as store
from engine.store.dead_letters import DeadLetterFilter
from tests.dead_letter_support import cloud_event, dead_letter, stored
from tests.integration.test_runtime import order_data, rows

PAYMENT = {"payment_id": "p-1", "provider": "card"}


def shared(runtime: Runtime) -> str:
    return runtime.topics.shared


async def placed(runtime: Runtime, key: str) -> None:
    await runtime.start("order", key, order_data(key))


async def history_of(db: AsyncEngine, event_id: str) -> list[str]:
    """The outcomes of ``event_id``'s history rows, in order."""
    found = await rows(
        db, "select outcome from history where event_id = :e order by id", e=event_id
    )
    return [r[0] for r in found]


# ------------------------------------------------------------------ the store


async def test_recording_a_redelivered_dead_letter_keeps_one_row_and_counts_it(
    runtime: Runtime, db: AsyncEngine
) -> None:
    letter = dead_letter(
        shared(runtime), cloud_event("e-1", "order.teleported", "k", {}), "unknown_type"
    )
    first = await stored(db, letter)
    await store.record(db, [letter, letter])  # a redelivered batch (and a repeat within it)
    again = await deadletters.get(db, first.id)
    assert len((await deadletters.list_dead_letters(db, DeadLetterFilter())).items) == 1
    assert again.seen_count == 2
    assert again.first_seen_at == first.first_seen_at
    assert again.last_seen_at >= first.last_seen_at
    assert again.status == "pending"
    assert (again.event_id, again.event_type, again.business_key) == (
        "e-1",
        "order.teleported",
        "k",
    )


async def test_a_batch_of_large_messages_is_recorded_in_several_statements(
    runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "CHUNK_BYTES", 20)
    batch = [
        dead_letter(shared(runtime), None, "undecodable", value=bytes([n]) * 12, key=b"k")
        for n in range(5)
    ]
    await store.record(db, batch)
    await store.record(db, batch)
    page = await deadletters.list_dead_letters(db, DeadLetterFilter())
    assert sorted(r.value or b"" for r in page.items) == [bytes([n]) * 12 for n in range(5)]
    assert {r.seen_count for r in page.items} == {2}


async def test_key_headers_and_value_round_trip_byte_for_byte(
    runtime: Runtime, db: AsyncEngine
) -> None:
    headers = (
        ("x-trace", b"abc"),
        ("x-binary", b"\xff\x00\xfe"),
        ("x-nul", b"a\x00b"),  # UTF-8, but jsonb cannot hold NUL: stored as base64
        ("x-empty", b""),
        ("x-text", "zürich".encode()),
    )
    letter = dead_letter(
        shared(runtime),
        None,
        "undecodable",
        value=b"\x00\x01 not a cloud event \xff",
        key=b"\xfe\xff",
        headers=headers,
        detail="bad \x00 detail",
    )
    got = await stored(db, letter)
    assert got.value == letter.value
    assert got.key == letter.key
    assert got.headers == headers
    assert got.detail == "bad \ufffd detail"
    detail = deadletters.detail_json(got)
    assert detail["value_encoding"] == "base64"
    assert detail["headers"][0] == ["x-trace", "abc"]
    assert detail["headers"][1] == ["x-binary", {"base64": "/wD+"}]
    assert store.headers_from_json(detail["headers"]) == headers


async def test_listing_filters_and_pages_newest_first(runtime: Runtime, db: AsyncEngine) -> None:
    topic = shared(runtime)
    reasons: list[DeadLetterReason] = ["invalid_payload", "no_instance"] * 3
    letters = [
        dead_letter(topic, cloud_event(f"l-{i}", "payment.initiated", f"k-{i % 2}", {}), reason)
        for i, reason in enumerate(reasons)
    ]
    await store.record(db, letters)
    everything = await deadletters.list_dead_letters(db, DeadLetterFilter(), limit=500)
    assert [r.event_id for r in everything.items] == [f"l-{i}" for i in reversed(range(6))]
    assert everything.next_cursor is None

    invalid = await deadletters.list_dead_letters(db, DeadLetterFilter(reason="invalid_payload"))
    assert [r.event_id for r in invalid.items] == ["l-4", "l-2", "l-0"]
    keyed = DeadLetterFilter(workflow="order", business_key="k-1")
    assert [r.event_id for r in (await deadletters.list_dead_letters(db, keyed)).items] == [
        "l-5",
        "l-3",
        "l-1",
    ]

    seen: list[str | None] = []
    cursor = None
    while True:
        page = await deadletters.list_dead_letters(db, DeadLetterFilter(), limit=4, cursor=cursor)
        seen.extend(r.event_id for r in page.items)
        if page.next_cursor is None:
            break
        cursor = int(page.next_cursor)
    assert seen == [r.event_id for r in everything.items]

    now = datetime.now(UTC)
    later = DeadLetterFilter(since=now + timedelta(minutes=1))
    assert (await deadletters.list_dead_letters(db, later)).items == ()
    earlier = DeadLetterFilter(until=now - timedelta(minutes=1))
    assert (await deadletters.list_dead_letters(db, earlier)).items == ()
    window = DeadLetterFilter(since=now - timedelta(minutes=1), until=now + timedelta(minutes=1))
    assert len((await deadletters.list_dead_letters(db, window)).items) == 6
    await deadletters.discard(db, everything.items[0].id)
    pending = await deadletters.list_dead_letters(db, DeadLetterFilter(status="pending"))
    assert len(pending.items) == 5


# ------------------------------------------------------------------ the hole


async def test_an_invalid_payload_does_not_use_up_its_event_id(
    runtime: Runtime, db: AsyncEngine
) -> None:
    await placed(runtime, "H-1")
    bad = Event("payment.initiated", "h-1", {"provider": ""}, workflow="order", business_key="H-1")
    assert (await runtime.send(bad)).status == "rejected"
    assert (await runtime.send(bad)).status == "rejected"  # refused again, not a duplicate
    fixed = Event("payment.initiated", "h-1", PAYMENT, workflow="order", business_key="H-1")
    assert (await runtime.send(fixed)).status == "applied"
    assert (await runtime.send(fixed)).status == "duplicate"
    assert await history_of(db, "h-1") == ["rejected", "rejected", "applied"]


async def test_in_one_batch_a_corrected_payload_applies_after_an_invalid_one(
    runtime: Runtime, db: AsyncEngine
) -> None:
    await placed(runtime, "H-2")
    bad = Event("payment.initiated", "h-2", {}, workflow="order", business_key="H-2")
    fixed = Event("payment.initiated", "h-2", PAYMENT, workflow="order", business_key="H-2")
    outcomes = await runtime.send_many([bad, fixed, fixed])
    assert [o.status for o in outcomes] == ["rejected", "applied", "duplicate"]


# ------------------------------------------------------------------ replay


async def test_a_replay_with_corrected_data_applies_once_under_the_same_event_id(
    runtime: Runtime, db: AsyncEngine
) -> None:
    await placed(runtime, "R-1")
    event = cloud_event("r-1", "payment.initiated", "R-1", {"provider": ""})
    # What the worker did with it: refused (history), dead-lettered.
    refused = await runtime.send(
        Event(event.type, event.id, event.data, workflow="order", business_key="R-1")
    )
    assert refused.status == "rejected"
    letter = await stored(db, dead_letter(shared(runtime), event, "invalid_payload"))

    replayed = await deadletters.replay(
        runtime, letter.id, correction=Correction(data=PAYMENT), request_id="req-1"
    )
    assert replayed.status == "replayed"
    assert replayed.resolved_by == "req-1"
    assert replayed.resolved_at is not None
    resolution = replayed.resolution or {}
    assert resolution["status"] == "applied"
    assert resolution["event_id"] == "r-1"
    assert (resolution["from_state"], resolution["to_state"]) == ("placed", "payment_pending")
    assert resolution["corrected"] is True
    assert resolution["value"]["data"] == PAYMENT
    instance = await runtime.find("order", "R-1")
    assert instance.state == "payment_pending"
    assert resolution["instance_id"] == str(instance.id)
    assert await history_of(db, "r-1") == ["rejected", "applied"]
    source = await rows(
        db, "select source, request_id from history where event_id = 'r-1' and outcome = 'applied'"
    )
    assert tuple(source[0]) == ("operator", "req-1")

    with pytest.raises(DeadLetterResolved):
        await deadletters.replay(runtime, letter.id, correction=Correction(data=PAYMENT))
    # The same request again answers what it did, and applies nothing.
    repeat = await deadletters.replay(
        runtime, letter.id, correction=Correction(data=PAYMENT), request_id="req-1"
    )
    assert repeat.resolution == replayed.resolution
    # The corrected event arriving again (say over Kafka) is a duplicate.
    again = Event("payment.initiated", "r-1", PAYMENT, workflow="order", business_key="R-1")
    assert (await runtime.send(again)).status == "duplicate"
    assert await history_of(db, "r-1") == ["rejected", "applied"]


async def test_a_replay_as_is_that_still_fails_is_refused_and_the_letter_stays_pending(
    runtime: Runtime, db: AsyncEngine
) -> None:
    await placed(runtime, "R-2")
    event = cloud_event("r-2", "payment.initiated", "R-2", {"provider": ""})
    letter = await stored(db, dead_letter(shared(runtime), event, "invalid_payload"))
    for attempt in (1, 2):
        with pytest.raises(ReplayFailed) as failed:
            await deadletters.replay(runtime, letter.id, request_id=f"try-{attempt}")
        assert failed.value.status_code == 422
        assert failed.value.reason == "invalid_payload"
        assert "payment_id" in str(failed.value)
        now = await deadletters.get(db, letter.id)
        assert now.status == "pending"
        assert now.resolved_by is None
        attempts = (now.resolution or {})["attempts"]
        assert [a["request_id"] for a in attempts] == [f"try-{i}" for i in range(1, attempt + 1)]
        assert attempts[-1]["reason"] == "invalid_payload"
    assert (await runtime.find("order", "R-2")).state == "placed"
    # Later fixed: the earlier attempts stay on record.
    done = await deadletters.replay(
        runtime, letter.id, correction=Correction(data=PAYMENT), request_id="fix"
    )
    assert len((done.resolution or {})["attempts"]) == 2


async def test_an_event_for_no_instance_applies_once_the_instance_exists(
    runtime: Runtime, db: AsyncEngine
) -> None:
    event = cloud_event("r-3", "payment.initiated", "R-3", PAYMENT)
    letter = await stored(db, dead_letter(shared(runtime), event, "no_instance"))
    with pytest.raises(ReplayFailed) as failed:
        await deadletters.replay(runtime, letter.id)
    assert failed.value.reason == "no_instance"
    await placed(runtime, "R-3")
    replayed = await deadletters.replay(runtime, letter.id)
    assert (replayed.resolution or {})["to_state"] == "payment_pending"


async def test_a_refused_start_replays_with_a_corrected_value(
    runtime: Runtime, db: AsyncEngine
) -> None:
    event = cloud_event("r-4", "order.placed", "R-4", {"order_id": "R-4"})
    letter = await stored(db, dead_letter(shared(runtime), event, "invalid_payload"))
    with pytest.raises(ReplayFailed) as failed:
        await deadletters.replay(runtime, letter.id)
    assert failed.value.reason == "invalid_payload"
    corrected = {
        "specversion": "1.0",
        "id": "r-4",
        "source": "test/shop",
        "type": "order.placed",
        "subject": "R-4",
        "data": order_data("R-4"),
    }
    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(value=corrected))
    resolution = replayed.resolution or {}
    assert resolution["status"] == "applied"
    instance = await runtime.find("order", "R-4")
    assert resolution["instance_id"] == str(instance.id)
    assert resolution["value"]["data"] == order_data("R-4")


async def test_an_undecodable_message_replays_only_with_a_corrected_value(
    runtime: Runtime, db: AsyncEngine
) -> None:
    await placed(runtime, "R-5")
    letter = await stored(
        db, dead_letter(shared(runtime), None, "undecodable", value=b"{not json", key=b"R-5")
    )
    with pytest.raises(ReplayFailed) as failed:
        await deadletters.replay(runtime, letter.id, correction=Correction(data=PAYMENT))
    assert failed.value.reason == "undecodable"
    with pytest.raises(ReplayFailed) as failed:
        await deadletters.replay(runtime, letter.id, correction=Correction(value={"id": "x"}))
    assert failed.value.reason == "missing_attributes"
    value = {
        "specversion": "1.0",
        "id": "r-5",
        "source": "s",
        "type": "payment.initiated",
        "data": PAYMENT,
    }  # no subject: the stored message key is the business key
    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(value=value))
    assert (replayed.resolution or {})["to_state"] == "payment_pending"


async def test_new_id_replays_under_another_event_id(runtime: Runtime, db: AsyncEngine) -> None:
    await placed(runtime, "R-6")
    event = cloud_event("r-6", "payment.initiated", "R-6", PAYMENT)
    letter = await stored(db, dead_letter(shared(runtime), event, "processing_error"))
    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
    resolution = replayed.resolution or {}
    assert resolution["event_id"] != "r-6"
    assert resolution["new_id"] is True
    assert await history_of(db, resolution["event_id"]) == ["applied"]
    assert await history_of(db, "r-6") == []


async def test_a_replay_forgets_a_rejection_but_never_applies_an_applied_event_again(
    runtime: Runtime, db: AsyncEngine
) -> None:
    await placed(runtime, "R-7")
    captured = {"payment_id": "p-1", "amount": "10", "currency": "EUR"}
    # Refused in 'placed' (not allowed yet): recorded as rejected in the inbox.
    early = Event("payment.captured", "r-7", captured, workflow="order", business_key="R-7")
    assert (await runtime.send(early)).status == "rejected"
    letter = await stored(
        db,
        dead_letter(
            shared(runtime), cloud_event("r-7", "payment.captured", "R-7", captured), "no_instance"
        ),
    )
    with pytest.raises(ReplayFailed) as failed:  # still not allowed: refused again
        await deadletters.replay(runtime, letter.id)
    assert failed.value.reason == "not_allowed"
    pay = Event("payment.initiated", "r-7-pay", PAYMENT, workflow="order", business_key="R-7")
    assert (await runtime.send(pay)).status == "applied"
    replayed = await deadletters.replay(runtime, letter.id)
    assert (replayed.resolution or {})["to_state"] == "paid"
    assert await history_of(db, "r-7") == ["rejected", "rejected", "applied"]

    # An event that was applied stays applied once: its replay is a duplicate.
    applied = await stored(
        db,
        dead_letter(
            shared(runtime),
            cloud_event("r-7-pay", "payment.initiated", "R-7", PAYMENT),
            "processing_error",
        ),
    )
    again = await deadletters.replay(runtime, applied.id)
    assert (again.resolution or {})["status"] == "duplicate"
    assert await history_of(db, "r-7-pay") == ["applied"]


# ------------------------------------------------------------------ discard


async def test_discard_keeps_the_reason_and_refuses_a_second_action(
    runtime: Runtime, db: AsyncEngine
) -> None:
    event = cloud_event("d-1", "order.teleported", "D-1", {})
    letter = await stored(db, dead_letter(shared(runtime), event, "unknown_type"))
    discarded = await deadletters.discard(db, letter.id, reason="test noise", request_id="rq")
    assert discarded.status == "discarded"
    assert discarded.resolved_by == "rq"
    assert (discarded.resolution or {})["reason"] == "test noise"
    assert (await deadletters.discard(db, letter.id, request_id="rq")) == discarded
    with pytest.raises(DeadLetterResolved) as resolved:
        await deadletters.discard(db, letter.id, request_id="other")
    assert resolved.value.status_code == 409
    with pytest.raises(DeadLetterResolved):
        await deadletters.replay(runtime, letter.id, request_id="rq")
    with pytest.raises(DeadLetterNotFound):
        await deadletters.discard(db, letter.id + 1000)
    with pytest.raises(DeadLetterNotFound):
        await deadletters.replay(runtime, letter.id + 1000)
    with pytest.raises(DeadLetterNotFound):
        await deadletters.get(db, letter.id + 1000)
