"""The test kit's database: the runtime's tables as Python objects, written by the same
write sets the runtime sends to PostgreSQL.

:meth:`Tables.write` takes the named parameters of ``statements.APPLY``
(:meth:`WriteSet.values`, the very JSON the runtime sends) and does what that statement
does: update the instances (``updated_at`` now, ``state_entered_at`` when entered), append
history, inbox and outbox rows, delete and upsert timers. :meth:`Tables.insert` does the
same for ``START_INSTANCES``. Values travel as JSON, as they do through ``jsonb``, so an
instance's data reads back exactly as the runtime would read it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import orjson

from engine.model import HistoryRecord, Instance, InstanceStatus

MessageKind = Literal["command", "event", "state_changed"]


@dataclass(slots=True)
class TimerRow:
    """A row of ``timers``: due at ``due_at``; a scheduler's lease in ``claimed_until``."""

    id: uuid.UUID
    instance_id: uuid.UUID
    name: str
    state: str
    due_at: datetime
    claimed_until: datetime | None = None
    spent: bool = False
    """Its id was processed already and it stays in the table, so any later firing would
    be a duplicate: the kit does not fire it again."""

    @property
    def eligible_at(self) -> datetime:
        """When a scheduler may claim it: when due, or when its lease runs out."""
        if self.claimed_until is None:
            return self.due_at
        return max(self.due_at, self.claimed_until)


@dataclass(frozen=True, slots=True)
class Message:
    """An outbound message as the relay would publish it (a row of ``outbox``): a
    workflow's command or event, or a ``conveyor.instance.state_changed``."""

    id: str
    instance_id: uuid.UUID
    topic: str
    key: str
    type: str
    kind: MessageKind
    data: Mapping[str, Any]
    cloudevent: Mapping[str, Any]
    """The whole CloudEvent (structured mode) as published."""
    headers: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Tables:
    """The kit's tables: instances, history, inbox, outbox, timers and parked events."""

    instances: dict[uuid.UUID, Instance]
    history: list[HistoryRecord]
    inbox: dict[tuple[uuid.UUID, str], str]  # (instance, event id) -> outcome
    outbox: list[Message]
    timers: dict[tuple[uuid.UUID, str], TimerRow]
    parked: dict[uuid.UUID, list[dict[str, Any]]]
    start_keys: dict[uuid.UUID, str]  # the idempotency key each was started with
    released: set[uuid.UUID]  # ended instances that gave their business key up (key reuse)

    @classmethod
    def empty(cls) -> Tables:
        return cls({}, [], {}, [], {}, {}, {}, set())

    # -------------------------------------------------------------- reads

    def find(self, workflow: str, business_key: str) -> Instance | None:
        """The instance that holds ``business_key`` in ``workflow``."""
        for instance in self.instances.values():
            if (
                instance.workflow == workflow
                and instance.business_key == business_key
                and instance.id not in self.released
            ):
                return instance
        return None

    def find_for_start(
        self, workflow: str, business_key: str, idempotency_key: str | None
    ) -> Instance | None:
        """After a start found its key taken: the instance of the same start (same
        idempotency key), else the one holding the business key (``FIND_FOR_START``)."""
        same = self._started_with(workflow, idempotency_key)
        return same if same is not None else self.find(workflow, business_key)

    def _started_with(self, workflow: str, idempotency_key: str | None) -> Instance | None:
        for instance_id, key in self.start_keys.items():
            instance = self.instances[instance_id]
            if key == idempotency_key and instance.workflow == workflow:
                return instance
        return None

    def release_key(self, instance_id: uuid.UUID) -> bool:
        """Mark an ended instance as having given its key up (``key_reuse.release_key``)."""
        instance = self.instances[instance_id]
        ended = instance.status in (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED)
        if not ended or instance_id in self.released:
            return False
        self.released.add(instance_id)
        return True

    def parked_pairs(self, instance_ids: Iterable[uuid.UUID]) -> frozenset[tuple[uuid.UUID, str]]:
        return frozenset(
            (i, row["event_id"]) for i in instance_ids for row in self.parked.get(i, [])
        )

    def timers_of(self, instance_id: uuid.UUID) -> list[TimerRow]:
        return sorted(
            (t for t in self.timers.values() if t.instance_id == instance_id),
            key=lambda t: (t.due_at, str(t.id)),
        )

    # -------------------------------------------------------------- writes

    def write(self, values: Mapping[str, Any]) -> None:
        """Do what ``statements.APPLY`` does with these parameters."""
        now: datetime = values["now"]
        for row in _table(values, "instances"):
            instance_id = uuid.UUID(row["id"])
            old = self.instances.get(instance_id)
            if old is None:
                continue  # `where i.id = u.id`: nothing to update
            entered = row["entered"]
            self.instances[instance_id] = replace(
                old,
                state=row["state"],
                data=row["data"],
                status=InstanceStatus(row["status"]),
                revision=row["revision"],
                updated_at=now,
                state_entered_at=(
                    old.state_entered_at if entered is None else datetime.fromisoformat(entered)
                ),
                error=row["error"],
            )
        self._write_rest(values, now)

    def insert(self, values: Mapping[str, Any]) -> list[uuid.UUID]:
        """Do what ``statements.START_INSTANCES`` does: insert the new instances whose
        business key is free, and the rest of the write set for those only."""
        now: datetime = values["now"]
        created: list[uuid.UUID] = []
        for row in _table(values, "instances"):
            start_key = row["start_key"]
            if self.find(row["workflow"], row["business_key"]) is not None or (
                start_key is not None and self._started_with(row["workflow"], start_key) is not None
            ):
                continue  # `on conflict do nothing`: a key is taken
            instance_id = uuid.UUID(row["id"])
            if start_key is not None:
                self.start_keys[instance_id] = start_key
            started = datetime.fromisoformat(row["now"])
            self.instances[instance_id] = Instance(
                id=instance_id,
                workflow=row["workflow"],
                version=row["version"],
                business_key=row["business_key"],
                state=row["state"],
                data=row["data"],
                status=InstanceStatus.ACTIVE,
                revision=1,
                created_at=started,
                updated_at=started,
                state_entered_at=started,
            )
            created.append(instance_id)
        self._write_rest(values, now, only=set(created))
        return created

    def _write_rest(
        self, values: Mapping[str, Any], now: datetime, only: set[uuid.UUID] | None = None
    ) -> None:
        def kept(row: Mapping[str, Any]) -> bool:
            return only is None or uuid.UUID(row["instance_id"]) in only

        for row in filter(kept, _table(values, "history")):
            self.history.append(
                HistoryRecord(
                    id=len(self.history) + 1,
                    instance_id=uuid.UUID(row["instance_id"]),
                    revision=row["revision"],
                    event_id=row["event_id"],
                    event_type=row["event_type"],
                    source=row["source"],
                    from_state=row["from_state"],
                    to_state=row["to_state"],
                    transition=row["transition"],
                    payload=row["payload"],
                    outcome=row["outcome"],
                    reason=row["reason"],
                    request_id=row["request_id"],
                    occurred_at=now,
                )
            )
        for row in filter(kept, _table(values, "inbox")):
            self.inbox.setdefault((uuid.UUID(row["instance_id"]), row["event_id"]), row["outcome"])
        for row in filter(kept, _table(values, "outbox")):
            self.outbox.append(_message(row))
        for row in _table(values, "timer_deletes"):
            self.timers.pop((uuid.UUID(row["instance_id"]), row["name"]), None)
        for row in filter(kept, _table(values, "timer_sets")):
            instance_id = uuid.UUID(row["instance_id"])
            self.timers[(instance_id, row["name"])] = TimerRow(
                uuid.UUID(row["id"]),
                instance_id,
                row["name"],
                row["state"],
                datetime.fromisoformat(row["due_at"]),
            )

    def set_timer(self, timer: TimerRow) -> None:
        """Set (or move) a timer by (instance, name), unclaimed (``timers.set_timer``)."""
        self.timers[(timer.instance_id, timer.name)] = timer

    def restore_timer(self, timer: TimerRow) -> None:
        """Put a fired timer back unless its name is taken again (``timers.restore``)."""
        self.timers.setdefault((timer.instance_id, timer.name), timer)

    def delete_timers(self, instance_id: uuid.UUID, name: str | None = None) -> None:
        for key in [k for k in self.timers if k[0] == instance_id]:
            if name is None or key[1] == name:
                del self.timers[key]

    def take_timer(self, timer_id: uuid.UUID) -> bool:
        """Delete the timer; whether it still existed (``timers.take``)."""
        for key, timer in list(self.timers.items()):
            if timer.id == timer_id:
                del self.timers[key]
                return True
        return False

    def release_claims(self, instance_id: uuid.UUID, but: str) -> None:
        for timer in self.timers.values():
            if timer.instance_id == instance_id and timer.name != but:
                timer.claimed_until = None

    def park(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Park events in arrival order; one already parked is parked once."""
        for row in rows:
            instance_id = uuid.UUID(row["instance_id"])
            waiting = self.parked.setdefault(instance_id, [])
            if all(p["event_id"] != row["event_id"] for p in waiting):
                # Through JSON, as through jsonb: the payload reads back as stored.
                waiting.append(orjson.loads(orjson.dumps(dict(row))))

    def unpark(self, instance_id: uuid.UUID, event_ids: Sequence[str]) -> None:
        waiting = self.parked.get(instance_id, [])
        self.parked[instance_id] = [p for p in waiting if p["event_id"] not in event_ids]

    def drop_parked(self, instance_id: uuid.UUID) -> list[dict[str, Any]]:
        """Remove what is parked for the instance; return those not processed yet."""
        rows = self.parked.pop(instance_id, [])
        return [r for r in rows if (instance_id, r["event_id"]) not in self.inbox]


def _table(values: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = orjson.loads(values[name])
    return rows


def _message(row: Mapping[str, Any]) -> Message:
    event: dict[str, Any] = orjson.loads(row["value"])
    kind: MessageKind = event.get("conveyorkind") or "state_changed"
    return Message(
        id=row["message_id"],
        instance_id=uuid.UUID(row["instance_id"]),
        topic=row["topic"],
        key=row["key"],
        type=event["type"],
        kind=kind,
        data=event.get("data") or {},
        cloudevent=event,
        headers=tuple((name, value) for name, value in row["headers"]),
    )


__all__ = ["Message", "MessageKind", "Tables", "TimerRow"]
