"""The command-handler worker's decisions, without Kafka: which reply (or failure event)
a command gets, with which id and address, after how many attempts; what it passes over.
The Kafka loop itself is tested end to end (tests/e2e/test_shop_example.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from conveyor_client.cloudevents import CloudEvent, derived_id, encode
from conveyor_client.handlers import Command, Handlers, Reply
from engine.messaging.routing import Router
from engine.registry import Registry
from engine.wire.cloudevents import decode as engine_decode
from workflows.order import Order

INSTANCE = "0199a0b0-0000-7000-8000-000000000001"


def record(event: CloudEvent | None, value: bytes | None = None) -> ConsumerRecord[bytes, bytes]:
    if event is not None:
        value, headers = encode(event)
    else:
        headers = []
    return ConsumerRecord(
        "conveyor.commands", 0, 7, 0, 0, b"ORD-1", value, None, 5, len(value or b""), headers
    )


def command(type: str = "payment.refund_requested", **data: Any) -> CloudEvent:
    return CloudEvent(
        id="cmd-1",
        source="conveyor/order/v1",
        type=type,
        subject="ORD-1",
        data=data or {"amount": "10.00"},
        extensions={"conveyorinstance": INSTANCE, "conveyorkind": "command"},
    )


def fast(service: str = "payments") -> Handlers:
    return Handlers(service, initial_backoff=0, max_backoff=0)


async def test_a_reply_goes_to_the_instance_with_an_id_derived_from_the_command() -> None:
    handlers = fast()
    seen: list[Command] = []

    @handlers.command("payment.refund_requested")
    async def refund(cmd: Command) -> Reply:
        seen.append(cmd)
        return Reply("payment.refunded", {"refund_id": "R-1"})

    reply = await handlers._handle(record(command()))
    assert reply is not None
    assert (reply.type, reply.data, reply.subject) == (
        "payment.refunded",
        {"refund_id": "R-1"},
        "ORD-1",
    )
    assert reply.instance_id == INSTANCE
    assert reply.source == "payments"
    assert reply.id == derived_id("cmd-1", "reply")
    again = await handlers._handle(record(command()))  # a redelivery: the same reply id
    assert again is not None
    assert again.id == reply.id
    (first, _) = seen
    assert (first.id, first.business_key, first.instance_id, first.attempt) == (
        "cmd-1",
        "ORD-1",
        INSTANCE,
        1,
    )
    assert first.data == {"amount": "10.00"}


async def test_a_handler_that_keeps_failing_sends_the_failure_event_after_its_attempts() -> None:
    handlers = fast()
    attempts: list[int] = []

    @handlers.command("carrier.booking_requested", attempts=3)
    async def book(cmd: Command) -> Reply:
        attempts.append(cmd.attempt)
        raise RuntimeError("no carrier")

    failure = await handlers._handle(record(command("carrier.booking_requested")))
    assert attempts == [1, 2, 3]
    assert failure is not None
    assert failure.type == "carrier.booking_requested.failed"
    assert failure.id == derived_id("cmd-1", "failed")
    assert failure.instance_id == INSTANCE
    assert failure.data == {
        "command_id": "cmd-1",
        "command_type": "carrier.booking_requested",
        "error": "RuntimeError: no carrier",
        "attempts": 3,
    }
    assert (handlers.counts.failures, handlers.counts.retries) == (1, 2)


async def test_a_failure_that_passes_is_retried_and_the_failure_event_can_be_named() -> None:
    handlers = fast()

    @handlers.command("payment.charge_requested", failure_event="payment.unavailable")
    async def charge(cmd: Command) -> Reply:
        if cmd.attempt == 1:
            raise ConnectionError("bank timeout")
        return Reply("payment.charged", {"payment_id": "P-1"})

    reply = await handlers._handle(record(command("payment.charge_requested")))
    assert reply is not None
    assert reply.type == "payment.charged"
    assert handlers.registrations["payment.charge_requested"].failure_event == "payment.unavailable"


async def test_sync_handlers_run_in_a_thread_and_a_handler_may_say_nothing() -> None:
    handlers = fast()
    threads: list[str] = []

    @handlers.command("payment.refund_requested")
    def refund(cmd: Command) -> None:
        threads.append(threading.current_thread().name)

    assert await handlers._handle(record(command())) is None
    assert threads
    assert threads[0] != threading.main_thread().name


async def test_a_slow_handler_times_out_and_counts_as_a_failed_attempt() -> None:
    handlers = fast()

    @handlers.command("payment.refund_requested", attempts=1, timeout=0.05)
    async def refund(cmd: Command) -> Reply:
        await asyncio.sleep(5)
        return Reply("payment.refunded")

    failure = await handlers._handle(record(command()))
    assert failure is not None
    assert failure.type == "payment.refund_requested.failed"
    assert "TimeoutError" in failure.data["error"]


async def test_other_types_and_bad_messages_are_passed_over() -> None:
    handlers = fast()

    @handlers.command("payment.refund_requested")
    async def refund(cmd: Command) -> Reply:
        raise AssertionError("not for this one")

    assert await handlers._handle(record(command("carrier.booking_requested"))) is None
    assert await handlers._handle(record(None, b"{not json")) is None
    assert await handlers._handle(record(None, b'{"specversion": "1.0"}')) is None
    assert (handlers.counts.ignored, handlers.counts.invalid) == (1, 2)


async def test_a_handler_returning_something_else_fails_clearly() -> None:
    handlers = fast()

    @handlers.command("payment.refund_requested", attempts=1)
    async def refund(cmd: Command) -> Any:
        return {"type": "payment.refunded"}

    failure = await handlers._handle(record(command()))
    assert failure is not None
    assert "a handler returns a Reply or None, not dict" in failure.data["error"]


def test_registration_is_validated() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        Handlers("")
    handlers = Handlers("svc")
    with pytest.raises(ValueError, match="attempts"):
        handlers.command("a", attempts=0)
    with pytest.raises(ValueError, match="timeout"):
        handlers.command("a", timeout=0)
    handlers.command("a")(lambda cmd: None)
    with pytest.raises(ValueError, match="already has a handler"):
        handlers.command("a")(lambda cmd: None)


async def test_a_reply_is_read_by_conveyors_worker_as_an_event_for_that_instance() -> None:
    handlers = fast()

    @handlers.command("payment.refund_requested")
    async def refund(cmd: Command) -> Reply:
        return Reply("payment.refunded", {"refund_id": "R-1"})

    reply = await handlers._handle(record(command()))
    assert reply is not None
    value, headers = encode(reply)
    decoded = engine_decode(value, headers)
    registry = Registry()
    registry.register(Order)
    routed = Router(registry, "conveyor").route("conveyor.in", b"ORD-1", decoded)
    (delivery,) = routed.deliveries  # type: ignore[union-attr]
    assert str(delivery.instance_id) == INSTANCE  # type: ignore[union-attr]
    assert delivery.event_id == reply.id  # type: ignore[union-attr]


def test_the_readme_shows_the_carrier_service_word_for_word() -> None:
    root = Path(__file__).resolve().parents[2]
    example = (root / "examples" / "shop" / "carrier.py").read_text()
    assert f"```python\n{example}```" in (root / "README.md").read_text()
