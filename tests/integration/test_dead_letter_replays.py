"""A dead letter's replay is one transaction: its deliveries and the dead letter's
resolution commit together on the connection that holds the row lock. A replay that dies
before it resolves leaves nothing applied; a new id is derived from the dead letter and
the attempt, so no retry mints a second one; concurrent replays never wait for a second
pooled connection."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import deadletters
from engine.deadletters import Correction, ReplayFailed, replay_event_id
from engine.model import Event, InstanceStatus
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store import dead_letters as store
from engine.store.database import create_engine
from tests import flows
from tests.dead_letter_support import cloud_event, dead_letter, stored
from tests.integration.test_dead_letters import PAYMENT, history_of, placed, shared
from tests.integration.test_runtime import FakeClock, order_data, registry, rows


class ResolveDies:
    """Stands in for ``store.resolve``: the first call raises ``error`` (by default: the
    process or its connection died just before the dead letter was marked replayed),
    later calls resolve."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.real = store.resolve
        self.error = error or ConnectionResetError("connection lost before the resolve")

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return await self.real(*args, **kwargs)


async def applied_count(db: AsyncEngine, key: str, event_type: str) -> int:
    """How many ``event_type`` events were applied to the order ``key``."""
    found = await rows(
        db,
        "select count(*) from history h join instances i on i.id = h.instance_id"
        " where i.business_key = :k and h.event_type = :t and h.outcome = 'applied'",
        k=key,
        t=event_type,
    )
    return int(found[0][0])


async def test_a_replay_that_dies_before_its_resolve_applies_nothing_and_a_retry_applies_once(
    runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await placed(runtime, "A-1")
    event = cloud_event("a-1", "payment.initiated", "A-1", PAYMENT)
    letter = await stored(db, dead_letter(shared(runtime), event, "processing_error"))
    dies = ResolveDies()
    monkeypatch.setattr(store, "resolve", dies)

    with pytest.raises(ConnectionResetError):
        await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
    # Applied and resolved together, or neither.
    assert (await deadletters.get(db, letter.id)).status == "pending"
    assert (await runtime.find("order", "A-1")).state == "placed"
    assert await history_of(db, replay_event_id(letter.id, 1)) == []

    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
    resolution = replayed.resolution or {}
    assert (replayed.status, resolution["status"]) == ("replayed", "applied")
    assert resolution["event_id"] == replay_event_id(letter.id, 1)
    assert resolution["attempt"] == 1
    assert await applied_count(db, "A-1", "payment.initiated") == 1
    assert (await runtime.find("order", "A-1")).state == "payment_pending"
    assert dies.calls == 2


async def test_a_replay_that_loses_a_race_runs_again_and_applies_once(
    runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await placed(runtime, "A-7")
    event = cloud_event("a-7", "payment.initiated", "A-7", PAYMENT)
    letter = await stored(db, dead_letter(shared(runtime), event, "processing_error"))
    dies = ResolveDies(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    monkeypatch.setattr(store, "resolve", dies)
    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
    assert (replayed.resolution or {})["event_id"] == replay_event_id(letter.id, 1)
    assert dies.calls == 2
    assert await applied_count(db, "A-7", "payment.initiated") == 1


async def test_a_new_id_already_applied_by_an_unresolved_replay_is_a_duplicate(
    runtime: Runtime, db: AsyncEngine
) -> None:
    """What an older replay could leave behind (its event applied, its dead letter still
    pending): replaying with a new id again derives the same id, so it is a duplicate."""
    await placed(runtime, "A-2")
    event = cloud_event("a-2", "payment.initiated", "A-2", PAYMENT)
    letter = await stored(db, dead_letter(shared(runtime), event, "processing_error"))
    first = Event(
        "payment.initiated",
        replay_event_id(letter.id, 1),
        PAYMENT,
        workflow="order",
        business_key="A-2",
        source="operator",
    )
    assert (await runtime.send(first)).status == "applied"
    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
    assert (replayed.resolution or {})["status"] == "duplicate"
    assert await applied_count(db, "A-2", "payment.initiated") == 1


async def test_a_start_that_dies_before_its_resolve_starts_once(
    runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = cloud_event("a-3", "order.placed", "A-3", {"order_id": "A-3"})
    letter = await stored(db, dead_letter(shared(runtime), event, "invalid_payload"))
    corrected = Correction(data=order_data("A-3"), new_id=True)
    monkeypatch.setattr(store, "resolve", ResolveDies())
    with pytest.raises(ConnectionResetError):
        await deadletters.replay(runtime, letter.id, correction=corrected)
    assert await rows(db, "select id from instances where business_key = 'A-3'") == []

    replayed = await deadletters.replay(runtime, letter.id, correction=corrected)
    resolution = replayed.resolution or {}
    assert (resolution["status"], resolution["event_id"]) == (
        "applied",
        replay_event_id(letter.id, 1),
    )
    instance = await runtime.find("order", "A-3")
    assert resolution["instance_id"] == str(instance.id)
    started = await rows(db, "select event_id from history where outcome = 'started'")
    assert [r[0] for r in started] == [replay_event_id(letter.id, 1)]


async def test_each_failed_attempt_gets_its_own_derived_id(
    runtime: Runtime, db: AsyncEngine
) -> None:
    event = cloud_event("a-4", "payment.initiated", "A-4", PAYMENT)
    letter = await stored(db, dead_letter(shared(runtime), event, "no_instance"))
    for attempt in (1, 2):
        with pytest.raises(ReplayFailed) as failed:
            await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
        assert failed.value.extensions["event_id"] == replay_event_id(letter.id, attempt)
    await placed(runtime, "A-4")
    replayed = await deadletters.replay(runtime, letter.id, correction=Correction(new_id=True))
    resolution = replayed.resolution or {}
    assert (resolution["attempt"], resolution["event_id"]) == (3, replay_event_id(letter.id, 3))
    assert [a["attempt"] for a in resolution["attempts"]] == [1, 2]


async def test_an_action_that_raises_keeps_nothing_of_its_attempt_and_retries_as_the_worker(
    runtime: Runtime, db: AsyncEngine
) -> None:
    key = "A-5"
    await runtime.start("test.counter", key, {"key": key})
    flows.FAILURES[key] = 2  # fails twice; the policy allows three attempts at once
    try:
        event = cloud_event("a-5", "counter.label", key, {"label": "ok"})
        letter = await stored(
            db, dead_letter(shared(runtime), event, "processing_error", workflow="test.counter")
        )
        replayed = await deadletters.replay(runtime, letter.id)
    finally:
        flows.FAILURES.pop(key, None)
    assert (replayed.resolution or {})["status"] == "applied"
    instance = await runtime.find("test.counter", key)
    assert (instance.state, instance.data["label"]) == ("labelled", "ok")
    assert await history_of(db, "a-5") == ["applied"]  # the failed attempts left nothing


async def test_an_action_that_keeps_raising_leaves_the_instance_retrying_by_timer(
    runtime: Runtime, db: AsyncEngine
) -> None:
    key = "A-6"
    await runtime.start("test.counter", key, {"key": key})
    flows.FAILURES[key] = 1
    try:
        event = cloud_event("a-6", "counter.slow_label", key, {"label": "later"})
        letter = await stored(
            db, dead_letter(shared(runtime), event, "processing_error", workflow="test.counter")
        )
        replayed = await deadletters.replay(runtime, letter.id)
    finally:
        flows.FAILURES.pop(key, None)
    assert (replayed.status, (replayed.resolution or {})["status"]) == ("replayed", "retrying")
    instance = await runtime.find("test.counter", key)
    assert instance.status is InstanceStatus.RETRYING
    assert instance.data["label"] == ""
    assert await history_of(db, "a-6") == ["retrying"]
    timers = await rows(db, "select name from timers where instance_id = :i", i=instance.id)
    assert "conveyor.retry" in [t[0] for t in timers]


async def test_concurrent_replays_with_a_pool_of_two_all_apply(
    settings: Settings, clock: FakeClock
) -> None:
    small = create_engine(settings, pool_size=2)
    try:
        runtime = Runtime(small, registry(), topic_prefix=settings.topic_prefix, clock=clock)
        keys = [f"C-{n}" for n in range(8)]
        letters = []
        for key in keys:
            await placed(runtime, key)
            event = cloud_event(key.lower(), "payment.initiated", key, PAYMENT)
            letters.append(await stored(small, dead_letter(shared(runtime), event, "no_instance")))
        async with asyncio.timeout(30):
            replayed = await asyncio.gather(
                *(
                    deadletters.replay(runtime, letter.id, request_id=f"r-{letter.id}")
                    for letter in letters
                )
            )
        assert [r.status for r in replayed] == ["replayed"] * len(keys)
        for key in keys:
            assert (await runtime.find("order", key)).state == "payment_pending"
    finally:
        await small.dispose()
