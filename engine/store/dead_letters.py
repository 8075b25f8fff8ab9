"""Rows of ``dead_letters``: every message the worker dead-lettered, kept byte for byte.

The worker records a batch's dead letters with one set-based insert before it publishes
them to the dead-letter topic and commits the batch's offsets; ``(topic, partition,
kafka_offset)`` is unique, so a redelivered batch updates ``last_seen_at`` and
``seen_count`` of the rows it already wrote instead of adding new ones. Operators list,
read, replay and discard them (:mod:`engine.deadletters`).

Headers are stored as a JSON list of ``[name, value]`` pairs. A value is a JSON string
when its bytes are UTF-8 without NUL (jsonb cannot hold ``\\u0000``), and otherwise
``{"base64": "..."}``; names follow the same rule. :func:`headers_to_json` and
:func:`headers_from_json` are exact inverses, so the original bytes round-trip.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection, driver_transaction

DeadLetterStatus = Literal["pending", "replayed", "discarded"]
STATUSES: tuple[DeadLetterStatus, ...] = ("pending", "replayed", "discarded")

HeaderJSON = str | dict[str, str]

CHUNK_BYTES = 16 * 1024 * 1024
"""Messages (keys and values) per insert statement: a batch of large messages is written
in several statements (in one transaction), never as one oversized parameter."""


class NewDeadLetter(Protocol):
    """What the worker knows of a message it dead-letters (its ``DeadLetter``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def event_type(self) -> str | None: ...
    @property
    def workflow(self) -> str | None: ...
    @property
    def business_key(self) -> str | None: ...
    @property
    def instance_id(self) -> uuid.UUID | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One stored dead letter."""

    id: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value: bytes | None
    reason: str
    detail: str
    event_id: str | None
    event_type: str | None
    workflow: str | None
    business_key: str | None
    instance_id: uuid.UUID | None
    first_seen_at: datetime
    last_seen_at: datetime
    seen_count: int
    status: DeadLetterStatus
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Filters of :func:`list_page`; all optional, combined with AND."""

    reason: str | None = None
    topic: str | None = None
    workflow: str | None = None
    business_key: str | None = None
    status: DeadLetterStatus | None = None
    since: datetime | None = None  # first seen at or after
    until: datetime | None = None  # first seen before


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    items: tuple[DeadLetterRecord, ...]
    next_cursor: str | None  # the last id of this page, when more may follow


# One statement per batch; the rows travel as one JSON array. Bytes travel as base64.
RECORD = """
insert into dead_letters (topic, partition, kafka_offset, key, headers, value, reason, detail,
                          event_id, event_type, workflow, business_key, instance_id)
select d.topic, d.partition, d.kafka_offset, decode(d.key, 'base64'), d.headers,
       decode(d.value, 'base64'), d.reason, d.detail, d.event_id, d.event_type, d.workflow,
       d.business_key, d.instance_id
from rows from (jsonb_to_recordset($1::jsonb)
       as (topic text, partition int4, kafka_offset int8, key text, headers jsonb, value text,
           reason text, detail text, event_id text, event_type text, workflow text,
           business_key text, instance_id uuid)) with ordinality
     as d(topic, partition, kafka_offset, key, headers, value, reason, detail, event_id,
          event_type, workflow, business_key, instance_id, ord)
order by d.ord
on conflict (topic, partition, kafka_offset) do update
set last_seen_at = now(), seen_count = dead_letters.seen_count + 1
"""

COLUMNS = (
    "id, topic, partition, kafka_offset, key, headers, value, reason, detail, event_id,"
    " event_type, workflow, business_key, instance_id, first_seen_at, last_seen_at,"
    " seen_count, status, resolved_at, resolved_by, resolution"
)

GET = f"select {COLUMNS} from dead_letters where id = $1"
LOCK = f"select {COLUMNS} from dead_letters where id = $1 for update"

RESOLVE = f"""
update dead_letters set status = $2, resolved_at = now(), resolved_by = $3, resolution = $4::jsonb
where id = $1
returning {COLUMNS}
"""

NOTE_ATTEMPT = f"""
update dead_letters set resolution = $2::jsonb where id = $1
returning {COLUMNS}
"""

# A replay may apply an event whose earlier delivery the state machine refused (its
# inbox row says 'rejected'); an event that was applied is never forgotten.
FORGET_REJECTED = """
delete from inbox where instance_id = $1 and event_id = $2 and outcome = 'rejected'
returning 1
"""


async def record(db: AsyncEngine, letters: Sequence[NewDeadLetter]) -> None:
    """Store a batch's dead letters in one transaction, with one statement per
    :data:`CHUNK_BYTES` of messages; a letter already stored (a redelivery) has its
    ``last_seen_at`` and ``seen_count`` updated instead."""
    unique = {(d.topic, d.partition, d.offset): d for d in letters}
    if not unique:
        return
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for letter in unique.values():
        length = len(letter.value or b"") + len(letter.key or b"")
        if chunks[-1] and size + length > CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(_row(letter))
        size += length
    async with driver_transaction(db) as conn:
        for chunk in chunks:
            await conn.execute(RECORD, orjson.dumps(chunk).decode())


async def get(conn: asyncpg.Connection, letter_id: int) -> DeadLetterRecord | None:
    row = await conn.fetchrow(GET, letter_id)
    return None if row is None else _record_of(row)


async def get_one(db: AsyncEngine, letter_id: int) -> DeadLetterRecord | None:
    """The dead letter ``letter_id``, or None."""
    async with driver_connection(db) as conn:
        return await get(conn, letter_id)


async def lock(conn: asyncpg.Connection, letter_id: int) -> DeadLetterRecord | None:
    """The dead letter, locked until the transaction ends (one operator action at a time)."""
    row = await conn.fetchrow(LOCK, letter_id)
    return None if row is None else _record_of(row)


async def resolve(
    conn: asyncpg.Connection,
    letter_id: int,
    status: DeadLetterStatus,
    resolved_by: str | None,
    resolution: Mapping[str, Any],
) -> DeadLetterRecord:
    """Mark the dead letter replayed or discarded, saying by whom and what happened."""
    row = await conn.fetchrow(
        RESOLVE, letter_id, status, resolved_by, orjson.dumps(resolution).decode()
    )
    return _record_of(row)


async def note_attempt(
    conn: asyncpg.Connection, letter_id: int, resolution: Mapping[str, Any]
) -> DeadLetterRecord:
    """Keep a failed replay's account in ``resolution``; the dead letter stays pending."""
    row = await conn.fetchrow(NOTE_ATTEMPT, letter_id, orjson.dumps(resolution).decode())
    return _record_of(row)


async def forget_rejected(conn: asyncpg.Connection, instance_id: uuid.UUID, event_id: str) -> bool:
    """Drop the inbox row of ``event_id`` at this instance if (and only if) its recorded
    outcome is ``rejected``, so that a replay may apply it (in the replay's transaction);
    whether one was dropped."""
    return await conn.fetchval(FORGET_REJECTED, instance_id, event_id) is not None


async def list_page(
    db: AsyncEngine, filters: DeadLetterFilter, *, limit: int = 50, after: int | None = None
) -> DeadLetterPage:
    """Dead letters matching ``filters``, newest first (by id: the order they were
    recorded), by keyset pagination: ``after`` is the previous page's ``next_cursor``."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in (
        ("reason", filters.reason),
        ("topic", filters.topic),
        ("workflow", filters.workflow),
        ("business_key", filters.business_key),
        ("status", filters.status),
    ):
        if value is not None:
            clauses.append(f"{column} = {arg(value)}")
    if filters.since is not None:
        clauses.append(f"first_seen_at >= {arg(filters.since)}")
    if filters.until is not None:
        clauses.append(f"first_seen_at < {arg(filters.until)}")
    if after is not None:
        clauses.append(f"id < {arg(after)}")
    where = " and ".join(clauses) or "true"
    query = (
        f"select {COLUMNS} from dead_letters where {where} order by id desc limit {arg(limit + 1)}"
    )
    async with driver_connection(db) as conn:
        rows = await conn.fetch(query, *args)
    items = tuple(_record_of(r) for r in rows[:limit])
    next_cursor = str(items[-1].id) if len(rows) > limit else None
    return DeadLetterPage(items, next_cursor)


# ------------------------------------------------------------------ headers and text


async def pending_by_reason(db: AsyncEngine) -> dict[str, int]:
    """How many dead letters wait for an operator, by reason."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select reason, count(*) as n from dead_letters where status = 'pending'"
            " group by reason order by reason"
        )
    return {r["reason"]: int(r["n"]) for r in rows}


def bytes_to_json(raw: bytes) -> HeaderJSON:
    """Bytes as a JSON string when they are UTF-8 without NUL, else ``{"base64": ...}``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return text
    return {"base64": base64.b64encode(raw).decode()}


def bytes_from_json(value: Any) -> bytes:
    """The inverse of :func:`bytes_to_json`."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("base64"), str):
        return base64.b64decode(value["base64"])
    raise ValueError(f"not a stored header part: {value!r}")


def headers_to_json(headers: Sequence[tuple[str, bytes]]) -> list[list[HeaderJSON]]:
    """Kafka headers as stored: ``[[name, value], ...]`` (see the module's docstring)."""
    return [
        [bytes_to_json(name.encode("utf-8", "surrogatepass")), bytes_to_json(value)]
        for name, value in headers
    ]


def headers_from_json(stored: Any) -> tuple[tuple[str, bytes], ...]:
    """The inverse of :func:`headers_to_json`."""
    return tuple(
        (bytes_from_json(name).decode("utf-8", "surrogatepass"), bytes_from_json(value))
        for name, value in stored or ()
    )


def _text(value: str | None) -> str | None:
    """Text PostgreSQL can hold: no NUL, no lone surrogates (a label, not the message:
    the message itself is kept as bytes)."""
    if value is None:
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def _row(letter: NewDeadLetter) -> dict[str, Any]:
    return {
        "topic": _text(letter.topic),
        "partition": letter.partition,
        "kafka_offset": letter.offset,
        "key": _b64(letter.key),
        "headers": headers_to_json(letter.headers),
        "value": _b64(letter.value),
        "reason": _text(letter.reason),
        "detail": _text(letter.detail),
        "event_id": _text(letter.event_id),
        "event_type": _text(letter.event_type),
        "workflow": _text(letter.workflow),
        "business_key": _text(letter.business_key),
        "instance_id": str(letter.instance_id) if letter.instance_id is not None else None,
    }


def _record_of(row: asyncpg.Record) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=row["id"],
        topic=row["topic"],
        partition=row["partition"],
        offset=row["kafka_offset"],
        key=row["key"],
        headers=headers_from_json(row["headers"]),
        value=row["value"],
        reason=row["reason"],
        detail=row["detail"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        workflow=row["workflow"],
        business_key=row["business_key"],
        instance_id=row["instance_id"],
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        seen_count=row["seen_count"],
        status=row["status"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        resolution=row["resolution"],
    )


__all__ = [
    "STATUSES",
    "DeadLetterFilter",
    "DeadLetterPage",
    "DeadLetterRecord",
    "DeadLetterStatus",
    "NewDeadLetter",
    "bytes_from_json",
    "bytes_to_json",
    "forget_rejected",
    "get",
    "get_one",
    "headers_from_json",
    "headers_to_json",
    "list_page",
    "lock",
    "note_attempt",
    "pending_by_reason",
    "record",
    "resolve",
]
