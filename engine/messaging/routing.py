"""Routing: which topics the worker reads, and how a CloudEvent finds its instance.

Pure: no I/O. The rules, derived from the registry (nothing to configure by hand):

* **Topics.** Every workflow is fed from its own topic ``{prefix}.in.{workflow name}``
  and from the shared topic ``{prefix}.in``. On a workflow's own topic only that
  workflow is considered; on the shared topic every workflow that handles the type is.
* **Type.** A workflow handles a CloudEvent ``type`` when one of its registered versions
  has a transition for it, or it is its ``start_event``. No workflow: ``unknown_type``.
* **Instance.** The ``conveyorinstance`` extension (an instance id) wins; else the
  business key is the CloudEvent ``subject``, else the Kafka message key (UTF-8).
* **Start.** An event whose type is a workflow's ``start_event`` (and that names no
  instance) starts an instance of that workflow (latest version): business key as above,
  data = ``initial_data_from(data)``, idempotency key = the CloudEvent ``id``, so a
  redelivered start returns the same instance instead of conflicting.
* **Event id.** The CloudEvent ``id`` is the event id (the inbox deduplicates on it,
  per instance).
  When one message fans out to several workflows (shared topic, a type several
  workflows handle) each delivery gets ``{id}@{workflow}`` so that each takes effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.model import Event
from engine.registry import Registry, WorkflowDefinition
from engine.spec import RESERVED_EVENT_PREFIX
from engine.wire.cloudevents import (
    CloudEvent,
    Headers,
    InvalidMessage,
    InvalidReason,
    decode,
)
from engine.wire.topics import Topics

INSTANCE_EXTENSION = "conveyorinstance"

DeadLetterReason = Literal[
    InvalidReason,  # undecodable, missing_attributes: see engine.wire.cloudevents
    "unknown_type",  # no workflow handles the type (on this topic)
    "missing_business_key",  # neither subject, message key nor conveyorinstance
    "invalid_instance_id",  # conveyorinstance is not a UUID
    "invalid_payload",  # data is not an object, or fails its schema
    "no_instance",  # no instance for the key, and the type starts no workflow
    "instance_conflict",  # a start for a business key that another start created
    "processing_error",  # the runtime raised a non-transient error for this event
    "orphaned",  # the instance's workflow, version or state is not loaded (conveyor check)
]


@dataclass(frozen=True, slots=True)
class StartCommand:
    """Start an instance of ``workflow`` (the message's ``start_event``)."""

    workflow: str
    business_key: str
    data: Mapping[str, Any]
    idempotency_key: str
    event_type: str


Delivery = StartCommand | Event


@dataclass(frozen=True, slots=True)
class Unroutable:
    """A message the worker cannot apply: it goes to the dead-letter topic."""

    reason: DeadLetterReason
    detail: str


@dataclass(frozen=True, slots=True)
class Routed:
    """What one message asks for: one delivery per workflow it concerns."""

    event: CloudEvent
    deliveries: tuple[Delivery, ...]


class Router:
    """Maps (topic, key, CloudEvent) to deliveries, following the module's rules."""

    def __init__(self, registry: Registry, topic_prefix: str) -> None:
        self.names = Topics(topic_prefix)
        latest: dict[str, WorkflowDefinition] = {}
        handlers: dict[str, set[str]] = {}
        for definition in registry.all():  # by name, then ascending version
            spec = definition.spec
            latest[spec.name] = definition
            for event_type in spec.handled_events:
                handlers.setdefault(event_type, set()).add(spec.name)
        self._latest = latest
        self._handlers = {t: tuple(sorted(names)) for t, names in handlers.items()}
        self._by_topic = {self.names.workflow(name): name for name in latest}

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the worker subscribes to: the shared one, then one per workflow."""
        return (self.names.shared, *sorted(self._by_topic))

    def workflows_for(self, topic: str, event_type: str) -> tuple[str, ...]:
        """The workflows a message of ``event_type`` on ``topic`` is for."""
        candidates = self._handlers.get(event_type, ())
        own = self._by_topic.get(topic)
        if own is not None:
            return (own,) if own in candidates else ()
        return candidates

    def route_message(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> Routed | Unroutable:
        """Decode a Kafka message and route it; never raises for a bad message."""
        try:
            event = decode(value, headers)
        except InvalidMessage as exc:
            return Unroutable(exc.reason, str(exc))
        return self.route(topic, key, event)

    def route(self, topic: str, key: bytes | None, event: CloudEvent) -> Routed | Unroutable:
        if event.type.startswith(RESERVED_EVENT_PREFIX):
            return Unroutable(
                "unknown_type",
                f"type {event.type!r} is reserved: types starting with "
                f"{RESERVED_EVENT_PREFIX!r} are Conveyor's own (an operator cancels over HTTP)",
            )
        workflows = self.workflows_for(topic, event.type)
        if not workflows:
            where = (
                f"workflow '{self._by_topic[topic]}'"
                if topic in self._by_topic
                else "any registered workflow"
            )
            return Unroutable("unknown_type", f"type {event.type!r} is not handled by {where}")
        payload = event.data if event.data is not None else {}
        if not isinstance(payload, Mapping):
            return Unroutable(
                "invalid_payload", f"data must be a JSON object, not {type(payload).__name__}"
            )
        instance_ref = event.extensions.get(INSTANCE_EXTENSION)
        if instance_ref is not None:
            try:
                instance_id = uuid.UUID(instance_ref)
            except ValueError:
                return Unroutable(
                    "invalid_instance_id", f"{INSTANCE_EXTENSION} {instance_ref!r} is not a UUID"
                )
            # An instance id addresses one instance (of one workflow): no fan-out, no start.
            return Routed(
                event,
                (Event(event.type, event.id, payload, instance_id=instance_id, source="kafka"),),
            )
        business_key = event.subject or _key_text(key)
        if not business_key:
            return Unroutable(
                "missing_business_key",
                "no subject, no UTF-8 message key and no conveyorinstance extension",
            )
        fan_out = len(workflows) > 1
        deliveries: list[Delivery] = []
        for name in workflows:
            definition = self._latest[name]
            if definition.spec.start_event == event.type:
                try:
                    data = definition.initial_data_from(payload)
                except Exception as exc:  # user code: any failure means "bad start payload"
                    return Unroutable(
                        "invalid_payload",
                        f"{definition.spec.label}: initial_data_from failed: {exc!r}",
                    )
                deliveries.append(StartCommand(name, business_key, data, event.id, event.type))
            else:
                event_id = f"{event.id}@{name}" if fan_out else event.id
                deliveries.append(
                    Event(
                        event.type,
                        event_id,
                        payload,
                        workflow=name,
                        business_key=business_key,
                        source="kafka",
                    )
                )
        return Routed(event, tuple(deliveries))


def _key_text(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def starts_first(
    deliveries: Iterable[tuple[int, Delivery]],
) -> tuple[list[tuple[int, StartCommand]], list[tuple[int, Event]]]:
    """Split indexed deliveries into starts and events, each keeping its order."""
    starts: list[tuple[int, StartCommand]] = []
    events: list[tuple[int, Event]] = []
    for index, delivery in deliveries:
        if isinstance(delivery, StartCommand):
            starts.append((index, delivery))
        else:
            events.append((index, delivery))
    return starts, events


def apart_from_starts(
    starts: Sequence[tuple[int, StartCommand]], events: Sequence[tuple[int, Event]]
) -> tuple[list[tuple[int, Event]], list[tuple[int, Event]]]:
    """Split events into those that may run alongside ``starts`` and those that must wait
    for them: an event addressed to a (workflow, business key) that one of the starts
    creates waits; events for other keys, or addressed by instance id (an instance being
    started has no id anyone knows yet), do not. Each part keeps its order."""
    started = {(start.workflow, start.business_key) for _, start in starts}
    alongside: list[tuple[int, Event]] = []
    after: list[tuple[int, Event]] = []
    for item in events:
        event = item[1]
        waits = event.instance_id is None and (event.workflow, event.business_key) in started
        (after if waits else alongside).append(item)
    return alongside, after


def group_starts(
    starts: Sequence[tuple[int, StartCommand]],
) -> list[list[tuple[int, StartCommand]]]:
    """Group starts by (workflow, business key), in order: groups may run concurrently,
    the starts within a group must run one after the other."""
    groups: dict[tuple[str, str], list[tuple[int, StartCommand]]] = {}
    for item in starts:
        groups.setdefault((item[1].workflow, item[1].business_key), []).append(item)
    return list(groups.values())


__all__ = [
    "INSTANCE_EXTENSION",
    "DeadLetterReason",
    "Delivery",
    "Routed",
    "Router",
    "StartCommand",
    "Unroutable",
    "apart_from_starts",
    "group_starts",
    "starts_first",
]
