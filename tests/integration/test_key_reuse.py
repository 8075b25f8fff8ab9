"""Business-key reuse against the real PostgreSQL: a workflow declared with
``key_reuse = "after_end"`` starts a new instance with the key of an ended one."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.errors import InstanceConflict
from engine.messaging.delivery import apply_start
from engine.messaging.routing import StartCommand, Unroutable
from engine.model import Event, Instance, InstanceStatus, StartResult
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.database import driver_transaction
from tests import flows
from tests.integration.test_runtime import FakeClock, registry, rows
from tests.key_reuse_flows import Ticket, TicketV2

TICKET = "test.ticket"


@pytest.fixture
def tickets(db: AsyncEngine, settings: Settings, clock: FakeClock) -> Runtime:
    """Tickets v1 (reuse after end) and v2 (never), and the counter (never)."""
    return Runtime(
        db,
        registry(Ticket, TicketV2, flows.Counter),
        topic_prefix=settings.topic_prefix,
        clock=clock,
    )


async def start(runtime: Runtime, key: str, **kwargs: object) -> StartResult:
    return await runtime.start(TICKET, key, {"number": key}, version=1, **kwargs)  # type: ignore[arg-type]


async def close(runtime: Runtime, instance: Instance) -> None:
    """Answer and close a ticket: it completes."""
    for event_type in ("ticket.answered", "ticket.closed"):
        outcome = await runtime.send(
            Event(type=event_type, event_id=str(uuid.uuid4()), instance_id=instance.id)
        )
        assert outcome.status == "applied", outcome
    assert (await runtime.get(instance.id)).status is InstanceStatus.COMPLETED


async def released(db: AsyncEngine) -> dict[uuid.UUID, bool]:
    return {r.id: r.key_released for r in await rows(db, "select id, key_released from instances")}


async def test_a_completed_tickets_number_starts_a_new_ticket(
    tickets: Runtime, db: AsyncEngine
) -> None:
    first = (await start(tickets, "T-1")).instance
    await close(tickets, first)

    again = await start(tickets, "T-1")

    assert again.created
    second = again.instance
    assert second.id != first.id
    assert (second.business_key, second.state, second.status, second.revision) == (
        "T-1",
        "open",
        InstanceStatus.ACTIVE,
        1,
    )
    assert await released(db) == {first.id: True, second.id: False}
    assert (await tickets.find(TICKET, "T-1")).id == second.id
    holder, earlier = await tickets.find_with_earlier(TICKET, "T-1")
    assert holder.id == second.id
    assert [i.id for i in earlier] == [first.id]
    # The old ticket keeps its state and history; the new one has its own.
    assert (await tickets.get(first.id)).state == "closed"
    assert [h.outcome for h in await tickets.history(second.id)] == ["started"]


async def test_a_cancelled_tickets_number_is_reused_too_and_lookups_list_newest_first(
    tickets: Runtime, clock: FakeClock
) -> None:
    ids = []
    for _ in range(3):
        instance = (await start(tickets, "T-2")).instance
        ids.append(instance.id)
        cancelled = await operations.cancel(tickets, instance.id, reason="duplicate")
        assert cancelled.instance.status is InstanceStatus.CANCELLED
        clock.now = clock.now.replace(minute=clock.now.minute + 1)
    newest = (await start(tickets, "T-2")).instance

    holder, earlier = await tickets.find_with_earlier(TICKET, "T-2")
    assert holder.id == newest.id
    assert [i.id for i in earlier] == ids[::-1]
    _, bounded = await tickets.find_with_earlier(TICKET, "T-2", limit=2)
    assert [i.id for i in bounded] == ids[:0:-1]


async def test_a_live_ticket_keeps_its_number(tickets: Runtime, db: AsyncEngine) -> None:
    first = (await start(tickets, "T-3")).instance
    with pytest.raises(InstanceConflict, match="T-3"):
        await start(tickets, "T-3")
    await tickets.send(
        Event(type="ticket.answered", event_id="answer", instance_id=first.id)
    )  # still live, answered
    with pytest.raises(InstanceConflict, match="T-3"):
        await start(tickets, "T-3", idempotency_key="another start")
    assert await released(db) == {first.id: False}


async def test_a_workflow_without_key_reuse_conflicts_after_the_end_as_before(
    tickets: Runtime, db: AsyncEngine
) -> None:
    counter = (await tickets.start("test.counter", "C-1", {"key": "C-1"})).instance
    await tickets.send(Event(type="counter.close", event_id="close", instance_id=counter.id))
    assert (await tickets.get(counter.id)).status is InstanceStatus.COMPLETED
    with pytest.raises(InstanceConflict, match="C-1"):
        await tickets.start("test.counter", "C-1", {"key": "C-1"})
    assert await released(db) == {counter.id: False}


async def test_the_policy_of_the_version_being_started_decides(
    tickets: Runtime, db: AsyncEngine
) -> None:
    first = (await start(tickets, "T-4")).instance
    await close(tickets, first)
    with pytest.raises(InstanceConflict, match="T-4"):  # v2 keeps one ticket per number
        await tickets.start(TICKET, "T-4", {"number": "T-4"}, version=2)
    second = (await start(tickets, "T-4")).instance  # v1 lets it be reused
    assert await released(db) == {first.id: True, second.id: False}


async def test_the_same_start_again_answers_the_same_instance_even_after_its_end(
    tickets: Runtime, db: AsyncEngine
) -> None:
    first = (await start(tickets, "T-5", idempotency_key="start-1")).instance
    await close(tickets, first)

    again = await start(tickets, "T-5", idempotency_key="start-1")

    assert not again.created
    assert again.instance.id == first.id
    assert await released(db) == {first.id: False}
    # A new start (another idempotency key) reuses the number; repeating it is idempotent.
    second = await start(tickets, "T-5", idempotency_key="start-2")
    repeated = await start(tickets, "T-5", idempotency_key="start-2")
    assert second.created
    assert not repeated.created
    assert repeated.instance.id == second.instance.id
    assert await released(db) == {first.id: True, second.instance.id: False}
    # The first start's key still names the first instance.
    assert (await start(tickets, "T-5", idempotency_key="start-1")).instance.id == first.id


async def test_concurrent_starts_of_a_reusable_number_make_exactly_one_new_ticket(
    tickets: Runtime, db: AsyncEngine
) -> None:
    keys = [f"T-race-{n}" for n in range(8)]
    firsts = [(await start(tickets, key)).instance for key in keys]
    for instance in firsts:
        await close(tickets, instance)

    # Five starts per number at once: shared group commits, and separate transactions.
    attempts = [start(tickets, key, idempotency_key=f"{key}/{n}") for key in keys for n in range(5)]
    results = await asyncio.gather(*attempts, return_exceptions=True)

    for index, key in enumerate(keys):
        mine = results[index * 5 : index * 5 + 5]
        created = [r for r in mine if isinstance(r, StartResult) and r.created]
        conflicts = [r for r in mine if isinstance(r, InstanceConflict)]
        assert len(created) == 1, (key, mine)
        assert len(conflicts) == 4, (key, mine)
    counts = await rows(
        db,
        "select business_key, count(*) filter (where key_released) as released,"
        " count(*) filter (where not key_released) as holding from instances"
        " group by business_key",
    )
    assert sorted(counts) == [(key, 1, 1) for key in sorted(keys)]


async def test_an_event_sent_by_number_goes_to_the_newest_ticket(
    tickets: Runtime, db: AsyncEngine
) -> None:
    first = (await start(tickets, "T-6")).instance
    await close(tickets, first)
    second = (await start(tickets, "T-6")).instance

    outcome = await tickets.send(
        Event(type="ticket.answered", event_id="by-key", workflow=TICKET, business_key="T-6")
    )

    assert outcome.status == "applied"
    assert outcome.instance is not None
    assert outcome.instance.id == second.id
    assert (await tickets.get(second.id)).state == "answered"
    assert (await tickets.get(first.id)).revision == 3  # started, answered, closed: untouched
    many = await tickets.send_many(
        [Event(type="ticket.closed", event_id="by-key-2", workflow=TICKET, business_key="T-6")]
    )
    assert [(o.status, o.instance and o.instance.id) for o in many] == [("applied", second.id)]


async def test_a_start_from_kafka_reuses_the_number_like_any_other(
    db: AsyncEngine, settings: Settings, clock: FakeClock
) -> None:
    # Kafka starts the latest version: here v1, which lets a number be reused.
    tickets = Runtime(db, registry(Ticket), topic_prefix=settings.topic_prefix, clock=clock)
    first = (await start(tickets, "T-7")).instance

    def command(event_id: str) -> StartCommand:
        return StartCommand(TICKET, "T-7", {"number": "T-7"}, event_id, "ticket.opened")

    live = await apply_start(tickets, command("ce-1"))
    assert isinstance(live, Unroutable)
    assert live.reason == "instance_conflict"
    await close(tickets, first)
    reused = await apply_start(tickets, command("ce-2"))
    assert isinstance(reused, StartResult)
    assert reused.created
    redelivered = await apply_start(tickets, command("ce-2"))
    assert isinstance(redelivered, StartResult)
    assert not redelivered.created
    assert redelivered.instance.id == reused.instance.id


async def test_a_reuse_inside_a_callers_transaction_rolls_back_with_it(
    tickets: Runtime, db: AsyncEngine
) -> None:
    first = (await start(tickets, "T-8")).instance
    await close(tickets, first)

    class Abandon(Exception):
        pass

    async def reuse_then_abandon() -> None:
        async with driver_transaction(db) as conn:
            inside = await start(tickets, "T-8", conn=conn)
            assert inside.created
            raise Abandon

    with pytest.raises(Abandon):
        await reuse_then_abandon()

    assert await released(db) == {first.id: False}
    async with driver_transaction(db) as conn:
        kept = await start(tickets, "T-8", conn=conn)
    assert await released(db) == {first.id: True, kept.instance.id: False}
