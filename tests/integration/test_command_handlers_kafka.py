"""The command-handler worker against the real broker: commands in ``{prefix}.commands``
get their replies (and failure events) in ``{prefix}.in``, keyed by business key; the
group's offsets are committed after the replies, so a second worker in the same group
handles nothing again, and a worker in a new group handles everything again with the
same reply ids."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from conveyor_client.cloudevents import CloudEvent, decode, derived_id, encode
from conveyor_client.handlers import Command, Handlers, Reply
from engine.messaging.clients import create_producer
from engine.settings import Settings
from tests.conftest import unique

COMMANDS = 30


def command(n: int) -> CloudEvent:
    kind = "carrier.booking_requested" if n % 10 == 0 else "payment.refund_requested"
    return CloudEvent(
        id=f"cmd-{n}",
        source="conveyor/order/v1",
        type=kind if n % 7 else "inventory.reallocate",  # not this service's: passed over
        subject=f"ORD-{n}",
        data={"n": n},
        extensions={"conveyorinstance": f"0199a0b0-0000-7000-8000-{n:012d}"},
    )


def service() -> Handlers:
    handlers = Handlers("test-payments", initial_backoff=0, max_backoff=0)

    @handlers.command("payment.refund_requested")
    async def refund(cmd: Command) -> Reply:
        return Reply("payment.refunded", {"n": cmd.data["n"]})

    @handlers.command("carrier.booking_requested", attempts=2)
    async def book(cmd: Command) -> Reply:
        raise RuntimeError("no carrier")

    return handlers


@pytest.fixture
async def prefix(base_settings: Settings) -> str:
    prefix = unique("cmds")
    producer = create_producer(base_settings)
    await producer.start()
    try:
        for n in range(1, COMMANDS + 1):
            value, headers = encode(command(n))
            key = f"ORD-{n}".encode()
            await producer.send_and_wait(f"{prefix}.commands", value, key=key, headers=headers)
    finally:
        await producer.stop()
    return prefix


async def serve_until(handlers: Handlers, settings: Settings, prefix: str, group: str) -> None:
    """Serve until every command was looked at (handled, failed or passed over)."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        handlers.serve(
            stop,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic_prefix=prefix,
            group=group,
        )
    )
    counts = handlers.counts
    deadline = time.monotonic() + 30
    while counts.handled + counts.failures + counts.ignored < COMMANDS:
        assert not task.done(), task
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 15)


async def replies(settings: Settings, prefix: str, want: int) -> list[tuple[bytes, CloudEvent]]:
    consumer = AIOKafkaConsumer(
        f"{prefix}.in",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=unique("reader"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[tuple[bytes, CloudEvent]] = []
    try:
        deadline = time.monotonic() + 20
        while len(got) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend((r.key, decode(r.value, r.headers)) for r in records)
    finally:
        await consumer.stop()
    return got


async def committed(settings: Settings, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta is not None}


async def test_replies_and_failure_events_then_nothing_again_in_the_same_group(
    base_settings: Settings, prefix: str
) -> None:
    group = unique("payments")
    first = service()
    await serve_until(first, base_settings, prefix, group)
    mine = [n for n in range(1, COMMANDS + 1) if n % 7]
    failing = [n for n in mine if n % 10 == 0]
    assert (first.counts.replies, first.counts.failures) == (len(mine) - len(failing), len(failing))
    assert first.counts.ignored == COMMANDS - len(mine)

    sent = await replies(base_settings, prefix, len(mine))
    assert len(sent) == len(mine)
    by_id = {event.id: (key, event) for key, event in sent}
    for n in mine:
        outcome = "failed" if n in failing else "reply"
        key, event = by_id[derived_id(f"cmd-{n}", outcome)]
        assert key == f"ORD-{n}".encode()
        assert event.subject == f"ORD-{n}"
        assert event.instance_id == f"0199a0b0-0000-7000-8000-{n:012d}"
        if n in failing:
            assert event.type == "carrier.booking_requested.failed"
            assert event.data["attempts"] == 2
        else:
            assert (event.type, event.data) == ("payment.refunded", {"n": n})

    # The group's offsets were committed after the replies: at the end of every partition.
    # The topic is new: each partition's offsets start at 0, so committing to the end of
    # every partition sums to the number of commands.
    done = await committed(base_settings, group)
    assert {tp.topic for tp in done} == {f"{prefix}.commands"}
    assert sum(done.values()) == COMMANDS

    # A new group starts from the earliest command: the same replies, by id.
    fresh = service()
    await serve_until(fresh, base_settings, prefix, unique("payments"))
    resent = await replies(base_settings, prefix, 2 * len(mine))
    assert {event.id for _, event in resent} == set(by_id)
    assert len(resent) == 2 * len(mine)
