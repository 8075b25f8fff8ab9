"""Collects what a batch of decisions writes, as the arrays of one ``APPLY`` statement.

Pure: no I/O. It also computes the net effect per instance (the last state, the final set
of timers), so the statement never touches a row twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from engine.decide import OutboundMessage, TimerToSet
from engine.ids import name_id
from engine.model import Instance
from engine.store.statements import APPLY, START_INSTANCES
from engine.wire.cloudevents import CloudEvent, encode_structured
from engine.wire.topics import Topics

if TYPE_CHECKING:  # the write set itself is pure: only write() and write_starts() use it
    import asyncpg

TIMER_NAMESPACE = uuid.UUID("0b8f7a52-2f3e-5c1d-8e1b-6c4a3d2e1f00")
STATE_CHANGED_NAMESPACE = uuid.UUID("3d1e9c7a-5b2f-5e4d-9a8c-1f2e3d4c5b6a")
OUTBOUND_NAMESPACE = uuid.UUID("9c2d4e6f-7a8b-5c1d-8e2f-4a6b8c0d2e4f")
"""Published ids of outbound messages: uuid5(namespace, f"{instance id}/{decided id}")."""
STATE_CHANGED = "conveyor.instance.state_changed"

REJECTED_PAYLOAD_MAX_BYTES = 4096
"""A rejected event keeps its payload in its history row only up to this size of JSON
(bytes); a larger one is replaced by a marker (see :func:`rejected_payload`). Applied
events always keep theirs: it is the audit trail."""

HistoryPayload: TypeAlias = Mapping[str, Any] | orjson.Fragment
"""A history row's payload: a mapping, or JSON already serialised (embedded as is)."""


@dataclass(slots=True)
class InstanceUpdate:
    state: str
    data: Mapping[str, Any]
    status: str
    revision: int
    entered: datetime | None
    error: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One row of ``history``: a trigger and what it did (``outcome``: started, applied,
    rejected, retrying, resumed, failed, cancelled, retried)."""

    instance_id: uuid.UUID
    revision: int
    event_id: str
    event_type: str
    source: str
    outcome: str
    payload: HistoryPayload
    from_state: str | None = None
    to_state: str | None = None
    transition: str | None = None
    reason: str | None = None
    request_id: str | None = None


class WriteSet:
    """Everything one transaction writes: instance updates, history, inbox, outbox, timers."""

    def __init__(self, now: datetime, topics: Topics) -> None:
        self.now = now
        self._time = now.isoformat()  # every CloudEvent of the batch carries it
        self.topics = topics
        self._updates: dict[uuid.UUID, InstanceUpdate] = {}
        self._history: list[dict[str, Any]] = []
        self._inbox: list[tuple[str, uuid.UUID, str]] = []
        self._outbox: list[dict[str, Any]] = []
        self._timer_sets: dict[tuple[uuid.UUID, str], tuple[str, TimerToSet]] = {}
        self._timer_deletes: set[tuple[uuid.UUID, str]] = set()

    def __bool__(self) -> bool:
        return bool(
            self._updates
            or self._history
            or self._inbox
            or self._outbox
            or self._timer_sets
            or self._timer_deletes
        )

    def update(self, instance_id: uuid.UUID, update: InstanceUpdate) -> None:
        self._updates[instance_id] = update

    def history(self, row: HistoryRow) -> None:
        """Queue a row of ``history`` (rows are written in the order queued)."""
        self._history.append(
            {
                # Ids as text: orjson would call json_default for asyncpg's UUID type.
                "instance_id": str(row.instance_id),
                "revision": row.revision,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "source": row.source,
                "from_state": row.from_state,
                "to_state": row.to_state,
                "transition": row.transition,
                "payload": row.payload,
                "outcome": row.outcome,
                "reason": row.reason,
                "request_id": row.request_id,
            }
        )

    def inbox(self, event_id: str, instance_id: uuid.UUID, outcome: str) -> None:
        """Record that ``event_id`` was processed for ``instance_id``: a later delivery of
        that id to that instance is a duplicate; the same id for another instance is not."""
        self._inbox.append((event_id, instance_id, outcome))

    def set_timer(self, instance_id: uuid.UUID, event_id: str, timer: TimerToSet) -> None:
        """Set (or reset) a timer; its id derives from the instance and the event that set
        it (event ids are unique per instance only, so the instance is part of the name)."""
        key = (instance_id, timer.name)
        self._timer_deletes.discard(key)
        timer_id = name_id(TIMER_NAMESPACE, f"{instance_id}/{event_id}/{timer.name}")
        self._timer_sets[key] = (timer_id, timer)

    def cancel_timer(self, instance_id: uuid.UUID, name: str) -> None:
        key = (instance_id, name)
        self._timer_sets.pop(key, None)
        self._timer_deletes.add(key)

    def queue_outbound(
        self, instance: Instance, messages: Sequence[OutboundMessage], request_id: str | None
    ) -> None:
        """Queue a workflow's outbound events and commands (CloudEvents, structured mode).

        A decision names its messages after its trigger's event id, which is unique per
        instance only: the published id adds the instance (see ``OUTBOUND_NAMESPACE``), so
        two instances handling the same event id publish distinct messages.
        """
        for message in messages:
            topic = message.topic or (
                self.topics.commands if message.kind == "command" else self.topics.events
            )
            message_id = name_id(OUTBOUND_NAMESPACE, f"{instance.id}/{message.message_id}")
            self._queue(
                message_id,
                instance.id,
                topic,
                instance.business_key,
                CloudEvent(
                    id=message_id,
                    source=f"conveyor/{instance.workflow}/v{instance.version}",
                    type=message.type,
                    subject=instance.business_key,
                    time=self._time,
                    data=dict(message.payload),
                    extensions={"conveyorinstance": str(instance.id), "conveyorkind": message.kind},
                ),
                request_id,
            )

    def status_change(
        self,
        instance: Instance,
        *,
        status: str,
        error: Mapping[str, Any] | None,
        event_id: str,
        event_type: str,
        source: str,
        payload: HistoryPayload,
        outcome: str,
        reason: str | None,
        request_id: str | None,
        to_state: str | None,
        transition: str | None = None,
    ) -> int:
        """Queue a status change that takes no transition (retrying, failed, cancelled,
        active again): the instance row, its history entry and the ``state_changed``
        message. Returns the new revision."""
        revision = instance.revision + 1
        self.update(
            instance.id,
            InstanceUpdate(instance.state, instance.data, status, revision, None, error),
        )
        self.history(
            HistoryRow(
                instance.id,
                revision,
                event_id,
                event_type,
                source,
                outcome,
                payload,
                from_state=instance.state,
                to_state=to_state,
                transition=transition,
                reason=reason,
                request_id=request_id,
            )
        )
        self.state_changed(
            instance,
            from_state=instance.state,
            to_state=instance.state,
            status=status,
            revision=revision,
            event_id=event_id,
            event_type=event_type,
            request_id=request_id,
        )
        return revision

    def state_changed(
        self,
        instance: Instance,
        *,
        from_state: str | None,
        to_state: str,
        status: str,
        revision: int,
        event_id: str,
        event_type: str,
        request_id: str | None,
    ) -> None:
        """Queue the ``conveyor.instance.state_changed`` event other services follow."""
        message_id = name_id(STATE_CHANGED_NAMESPACE, f"{instance.id}/{revision}")
        self._queue(
            message_id,
            instance.id,
            self.topics.instances,
            instance.business_key,
            CloudEvent(
                id=message_id,
                source=f"conveyor/{instance.workflow}/v{instance.version}",
                type=STATE_CHANGED,
                subject=instance.business_key,
                time=self._time,
                data={
                    "workflow": instance.workflow,
                    "version": instance.version,
                    "instance_id": str(instance.id),
                    "business_key": instance.business_key,
                    "from": from_state,
                    "to": to_state,
                    "status": status,
                    "revision": revision,
                    "event_id": event_id,
                    "event_type": event_type,
                },
            ),
            request_id,
        )

    def publish(self, message_id: str, topic: str, key: str, event: CloudEvent) -> None:
        """Queue a CloudEvent that belongs to no instance (a schedule's tick publishes)."""
        self._queue(message_id, None, topic, key, event, None)

    def _queue(
        self,
        message_id: str,
        instance_id: uuid.UUID | None,
        topic: str,
        key: str,
        event: CloudEvent,
        request_id: str | None,
    ) -> None:
        value, headers = encode_structured(event)
        header_list = [[name, raw.decode()] for name, raw in headers]
        if request_id:
            header_list.append(["x-request-id", request_id])
        self._outbox.append(
            {
                "message_id": message_id,
                "instance_id": None if instance_id is None else str(instance_id),
                "topic": topic,
                "key": key,
                "headers": header_list,
                # Our CloudEvents are UTF-8 JSON: they travel as text, stored as bytes.
                "value": value.decode(),
            }
        )

    def values(self) -> dict[str, Any]:
        """The named parameters of ``statements.APPLY``."""
        updates = [
            {
                "id": str(instance_id),
                "state": u.state,
                "data": u.data,
                "status": u.status,
                "revision": u.revision,
                "entered": u.entered,
                "error": u.error,
            }
            for instance_id, u in self._updates.items()
        ]
        return self._values(updates)

    def start_values(self, instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The named parameters of ``statements.START_INSTANCES``: the new instance rows
        (id, workflow, version, business_key, state, data, start_key, now) and the rest."""
        if self._updates:
            raise ValueError("a start batch updates no existing instance")
        return self._values(instances)

    async def write(self, conn: asyncpg.Connection) -> asyncpg.Record | None:
        """Write everything queued, updating existing instances: one statement."""
        return await conn.fetchrow(APPLY.sql, *APPLY.args(self.values()))

    async def write_starts(
        self, conn: asyncpg.Connection, instances: Sequence[Mapping[str, Any]]
    ) -> asyncpg.Record | None:
        """Insert ``instances`` and write what is queued for those inserted (a taken
        business or idempotency key skips its instance): one statement."""
        return await conn.fetchrow(
            START_INSTANCES.sql, *START_INSTANCES.args(self.start_values(instances))
        )

    def _values(self, instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        inbox = [{"event_id": e, "instance_id": str(i), "outcome": o} for e, i, o in self._inbox]
        deletes = [{"instance_id": str(i), "name": n} for i, n in sorted(self._timer_deletes)]
        sets = [
            {
                "id": timer_id,
                "instance_id": str(key[0]),
                "name": key[1],
                "state": timer.state,
                "due_at": timer.due_at,
            }
            for key, (timer_id, timer) in self._timer_sets.items()
        ]
        rows = {
            "instances": instances,
            "history": self._history,
            "inbox": inbox,
            "outbox": self._outbox,
            "timer_deletes": deletes,
            "timer_sets": sets,
        }
        values: dict[str, Any] = {
            name: orjson.dumps(table, default=json_default).decode() for name, table in rows.items()
        }
        values["now"] = self.now
        return values


def rejected_payload(payload: Mapping[str, Any]) -> HistoryPayload:
    """What a rejection records of ``payload``: the payload itself when its JSON is at most
    :data:`REJECTED_PAYLOAD_MAX_BYTES`, else ``{"_truncated": true, "bytes": N, "sha256":
    hex}`` (size and SHA-256 of its compact JSON, so that an operator can still correlate it
    with the message that carried it). Refused events cost bounded history space.

    The payload is serialised once: a small one is handed on as that JSON.
    """
    raw = orjson.dumps(payload, default=json_default)
    if len(raw) <= REJECTED_PAYLOAD_MAX_BYTES:
        return orjson.Fragment(raw)
    return {"_truncated": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID type, which orjson does not know
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
