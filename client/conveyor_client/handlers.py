"""Command handlers: the worker a service runs to answer a workflow's commands.

A workflow's action asks another service to do something with ``ctx.command(type,
payload)``; Conveyor publishes the command on ``{prefix}.commands`` (a CloudEvent whose
subject is the business key and whose ``conveyorinstance`` extension names the instance).
A service registers a handler per command type and runs them with one call::

    handlers = Handlers(service="payments")

    @handlers.command("payment.refund_requested")
    async def refund(command: Command) -> Reply:
        await bank.refund(command.data["payment_id"], idempotency_key=command.id)
        return Reply("payment.refunded", {"payment_id": command.data["payment_id"]})

    handlers.run(bootstrap_servers="127.0.0.1:9092")

How it behaves:

* It consumes ``{prefix}.commands`` in its own consumer group (default: the service's
  name), so every service sees every command and handles the types it registered
  (the others are passed over).
* A handler returns a :class:`Reply` (or ``None``: nothing to say) or raises. The reply
  goes to ``{prefix}.in`` keyed by the business key, with the instance's id as
  ``conveyorinstance``, so it reaches that instance and no other, and with an id derived
  from the command's id: a redelivered command yields the same reply id, which Conveyor
  ignores as a duplicate. Handlers should make their own side effects idempotent with
  ``command.id`` (a bank's idempotency key, a unique row).
* A handler that raises is called again, up to ``attempts`` times with a growing pause;
  then the service publishes the failure event (``{command type}.failed`` unless the
  handler names another) with the error, for the workflow to react to. A command that is
  not a CloudEvent is logged and passed over. Nothing blocks a partition for longer than
  the attempts take.
* Offsets are committed only after every reply of a batch has been acknowledged by the
  broker (``acks=all``, idempotent producer): a crash before that redelivers the
  commands, never loses one. Partitions are handled concurrently, each in order.
* SIGTERM or SIGINT stop it after the batch in hand (``run``); ``serve`` takes an
  :class:`asyncio.Event` instead.

Needs the ``kafka`` extra (``pip install 'conveyor-client[kafka]'``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from conveyor_client.cloudevents import (
    CloudEvent,
    InvalidCloudEvent,
    decode,
    derived_id,
    encode,
    event_for,
)

log = logging.getLogger("conveyor_client.handlers")


@dataclass(frozen=True, slots=True)
class Command:
    """One command a workflow sent."""

    id: str
    """The command's CloudEvent id: stable across redeliveries; use it as the idempotency
    key of whatever the handler does."""
    type: str
    data: Mapping[str, Any]
    business_key: str
    instance_id: str | None
    """The instance that sent it (replies go to it)."""
    source: str
    """Who sent it, e.g. ``conveyor/order/v1``."""
    attempt: int
    """1 on the first call, 2 on the first retry, ..."""
    event: CloudEvent = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """The event a handler answers with (its type and data)."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


Record: TypeAlias = ConsumerRecord[bytes, bytes]

Handler: TypeAlias = Callable[[Command], Awaitable[Reply | None] | Reply | None]


@dataclass(frozen=True, slots=True)
class Registration:
    """A handler with its retry policy."""

    type: str
    handler: Handler
    attempts: int
    failure_event: str
    timeout: float


@dataclass(slots=True)
class Counts:
    """What a running service did (for logs and tests)."""

    handled: int = 0
    replies: int = 0
    failures: int = 0
    """Commands whose handler kept failing (a failure event was sent)."""
    retries: int = 0
    ignored: int = 0
    """Commands of types this service does not handle."""
    invalid: int = 0
    """Messages that were not CloudEvents."""
    commit_failures: int = 0


class Handlers:
    """The handlers of one service, and the worker that runs them."""

    def __init__(
        self,
        service: str,
        *,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        if not service:
            raise ValueError("a service needs a name (the replies' source, the consumer group)")
        if initial_backoff < 0 or max_backoff < initial_backoff:
            raise ValueError("need 0 <= initial_backoff <= max_backoff")
        self.service = service
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.registrations: dict[str, Registration] = {}
        self.counts = Counts()

    def command(
        self,
        type: str,
        *,
        attempts: int = 3,
        failure_event: str | None = None,
        timeout: float = 30.0,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function for commands of ``type``: called up to
        ``attempts`` times (each within ``timeout`` seconds) before the failure event
        (default ``{type}.failed``) is sent. Sync functions run in a thread."""
        if not type:
            raise ValueError("a command type is required")
        if type in self.registrations:
            raise ValueError(f"{type!r} already has a handler")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")

        def register(handler: Handler) -> Handler:
            self.registrations[type] = Registration(
                type, handler, attempts, failure_event or f"{type}.failed", timeout
            )
            return handler

        return register

    # ------------------------------------------------------------------ running

    def run(
        self,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        topic_prefix: str = "conveyor",
        group: str | None = None,
    ) -> None:
        """Serve until SIGTERM or SIGINT (blocking; the process's main entry point)."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(
                stop, bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, group=group
            )

        asyncio.run(main())

    async def serve(
        self,
        stop: asyncio.Event,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        topic_prefix: str = "conveyor",
        group: str | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        """Serve until ``stop`` is set; ``ready`` is set once partitions are assigned.
        Kafka errors restart the clients after a pause; a handler's error never stops it."""
        if not self.registrations:
            raise ValueError(f"{self.service}: no command handler is registered")
        pause = 0.5
        while not stop.is_set():
            try:
                await self._serve_once(
                    stop, bootstrap_servers, topic_prefix, group or self.service, ready
                )
                return
            except KafkaError as error:
                log.warning("%s: Kafka error, restarting the clients: %r", self.service, error)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pause = min(pause * 2, 10.0)

    async def _serve_once(
        self,
        stop: asyncio.Event,
        bootstrap_servers: str,
        topic_prefix: str,
        group: str,
        ready: asyncio.Event | None,
    ) -> None:
        consumer = AIOKafkaConsumer(
            f"{topic_prefix}.commands",
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            client_id=f"{self.service}-commands",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=300_000,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{self.service}-replies",
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        try:
            await consumer.start()
            try:
                replies_to = f"{topic_prefix}.in"
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    if ready is not None and consumer.assignment():
                        ready.set()
                    if not batch:
                        continue
                    # Each partition in order, the partitions side by side; a reply the
                    # broker refused raises here, before anything is committed.
                    await asyncio.gather(
                        *(
                            self._partition(producer, replies_to, records)
                            for records in batch.values()
                        )
                    )
                    offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                    await self._commit(consumer, offsets)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as error:
            # Revoked by a rebalance while handling: the new owner handles these commands
            # again, and their replies are duplicates that Conveyor ignores.
            self.counts.commit_failures += 1
            log.warning("%s: commit failed after a rebalance: %s", self.service, error)

    async def _partition(
        self,
        producer: AIOKafkaProducer,
        replies_to: str,
        records: Sequence[ConsumerRecord[Any, Any]],
    ) -> None:
        """Handle one partition's records in order; their replies are acknowledged by the
        broker when this returns."""
        sent: list[asyncio.Future[Any]] = []
        for record in records:
            reply = await self._handle(record)
            if reply is None:
                continue
            key = reply.subject.encode() if reply.subject else None
            value, headers = encode(reply)
            sent.append(await producer.send(replies_to, value, key=key, headers=headers))
        for future in sent:
            await future  # acks=all: raises if the broker did not take it

    async def _handle(self, record: Record) -> CloudEvent | None:
        """The reply (or failure event) for one record; None when there is nothing to say."""
        try:
            event = decode(record.value, record.headers)
        except InvalidCloudEvent as invalid:
            self.counts.invalid += 1
            log.error(
                "%s: passed over a message that is not a CloudEvent (%s[%d]@%d): %s",
                self.service,
                record.topic,
                record.partition,
                record.offset,
                invalid,
            )
            return None
        registration = self.registrations.get(event.type)
        if registration is None:
            self.counts.ignored += 1
            return None
        business_key = event.subject or (record.key.decode() if record.key else "")
        if not business_key:
            self.counts.invalid += 1
            log.error("%s: command %s has no business key; passed over", self.service, event.id)
            return None
        data = event.data if isinstance(event.data, Mapping) else {}
        last_error = ""
        for attempt in range(1, registration.attempts + 1):
            command = Command(
                event.id,
                event.type,
                data,
                business_key,
                event.instance_id,
                event.source,
                attempt,
                event,
            )
            try:
                async with asyncio.timeout(registration.timeout):
                    answer = await _call(registration.handler, command)
            except Exception as raised:  # the handler's code: any failure is retried
                last_error = f"{type(raised).__name__}: {raised}"
                log.warning(
                    "%s: %s for %s failed (attempt %d of %d): %r",
                    self.service,
                    event.type,
                    business_key,
                    attempt,
                    registration.attempts,
                    raised,
                )
                if attempt < registration.attempts:
                    self.counts.retries += 1
                    await asyncio.sleep(self._backoff(attempt))
                continue
            self.counts.handled += 1
            if answer is None:
                return None
            self.counts.replies += 1
            return self._event(event, business_key, answer.type, answer.data, "reply")
        self.counts.failures += 1
        failure = {
            "command_id": event.id,
            "command_type": event.type,
            "error": last_error,
            "attempts": registration.attempts,
        }
        return self._event(event, business_key, registration.failure_event, failure, "failed")

    def _event(
        self,
        command: CloudEvent,
        business_key: str,
        type: str,
        data: Mapping[str, Any],
        outcome: str,
    ) -> CloudEvent:
        return event_for(
            type,
            business_key,
            data,
            source=self.service,
            id=derived_id(command.id, outcome),
            instance_id=command.instance_id,
        )

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.max_backoff, self.initial_backoff * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)


async def _call(handler: Handler, command: Command) -> Reply | None:
    """Call a handler: a coroutine function on the loop, anything else in a thread (it may
    block)."""
    if inspect.iscoroutinefunction(handler):
        answer: object = handler(command)
    else:
        answer = await asyncio.to_thread(handler, command)
    result = await answer if inspect.isawaitable(answer) else answer
    if result is not None and not isinstance(result, Reply):
        raise TypeError(f"a handler returns a Reply or None, not {type(result).__name__}")
    return result


__all__ = ["Command", "Counts", "Handler", "Handlers", "Registration", "Reply"]
