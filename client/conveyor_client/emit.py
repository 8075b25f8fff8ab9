"""Publish events to Conveyor's worker over Kafka (the ``kafka`` extra: aiokafka).

An event goes to ``{prefix}.in`` (any workflow that handles its type), or with
``workflow=`` to ``{prefix}.in.{workflow}`` (that workflow only), keyed by the business
key, as a CloudEvent whose ``subject`` is the business key: the worker finds the
instance by it (or by ``instance_id``, the ``conveyorinstance`` extension, when given),
and a workflow's start event starts an instance under that key. The producer waits for
every in-sync replica (``acks=all``) and is idempotent, so a send the broker
acknowledged is written once; give ``id`` (e.g. :func:`~conveyor_client.derived_id`
of your own message id) so that an event your service sends twice is applied once.

.. code-block:: python

    async with Emitter("kafka:9092", topic_prefix="conveyor") as emitter:
        await emitter.emit("payment.captured", "o-1", {"amount": "20"})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from conveyor_client.cloudevents import Mode, encode, event_for

DEFAULT_SOURCE = "conveyor-client"
DEFAULT_PREFIX = "conveyor"


@dataclass(frozen=True, slots=True)
class Emitted:
    """Where the broker wrote the event."""

    id: str
    topic: str
    partition: int
    offset: int


def inbound_topic(prefix: str, workflow: str | None = None) -> str:
    """``{prefix}.in``, or ``{prefix}.in.{workflow}`` for one workflow's own topic."""
    return f"{prefix}.in.{workflow}" if workflow else f"{prefix}.in"


class Emitter:
    """An idempotent producer (``acks=all``) publishing CloudEvents for Conveyor.

    ``producer_options`` go to ``AIOKafkaProducer`` (security settings, say); the
    acknowledgement and idempotence settings cannot be weakened.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        source: str = DEFAULT_SOURCE,
        **producer_options: Any,
    ) -> None:
        self.topic_prefix = topic_prefix
        self.source = source
        options: dict[str, Any] = {
            "client_id": "conveyor-client",
            "linger_ms": 2,
            "request_timeout_ms": 15000,
            **producer_options,
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
            "enable_idempotence": True,
        }
        self._producer = AIOKafkaProducer(**options)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> Emitter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def emit(
        self,
        type: str,
        key: str,
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        mode: Mode = "structured",
        topic: str | None = None,
        workflow: str | None = None,
        instance_id: str | None = None,
    ) -> Emitted:
        """Publish event ``type`` for business key ``key`` with ``data`` and wait for the
        broker's acknowledgement. ``mode`` structured (a JSON CloudEvent) or binary
        (``ce_*`` headers, the data as the value); ``topic`` overrides where it goes,
        ``workflow`` picks that workflow's own topic; ``instance_id`` addresses one
        instance (no start, no fan-out). A random event id unless ``id`` is given."""
        if not self._started:
            raise RuntimeError("start the Emitter first (async with Emitter(...) as e)")
        event = event_for(type, key, data, source=self.source, id=id, instance_id=instance_id)
        value, headers = encode(event, mode)
        target = topic or inbound_topic(self.topic_prefix, workflow)
        meta = await self._producer.send_and_wait(target, value, key=key.encode(), headers=headers)
        return Emitted(event.id, str(meta.topic), int(meta.partition), int(meta.offset))


async def emit(
    bootstrap_servers: str | list[str],
    type: str,
    key: str,
    data: Mapping[str, Any] | None = None,
    *,
    topic_prefix: str = DEFAULT_PREFIX,
    source: str = DEFAULT_SOURCE,
    id: str | None = None,
    mode: Mode = "structured",
    topic: str | None = None,
    workflow: str | None = None,
    instance_id: str | None = None,
) -> Emitted:
    """One event with a producer of its own (started and stopped here): for scripts; a
    service that sends many keeps an :class:`Emitter`."""
    async with Emitter(bootstrap_servers, topic_prefix=topic_prefix, source=source) as emitter:
        return await emitter.emit(
            type,
            key,
            data,
            id=id,
            mode=mode,
            topic=topic,
            workflow=workflow,
            instance_id=instance_id,
        )


__all__ = ["Emitted", "Emitter", "emit", "inbound_topic"]
