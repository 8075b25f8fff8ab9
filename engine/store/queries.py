"""Reading instances and their history: the queries behind the runtime's read calls.

Plain functions over the database (``db``: the AsyncEngine); every one is served by an index
(see the migrations).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import InstanceNotFound, InvalidRequest
from engine.model import HistoryRecord, Instance, InstanceStatus, Page
from engine.slas import StateSla
from engine.store import statements as sql
from engine.store.database import driver_connection


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    """Filters for :meth:`Runtime.list_instances` (and bulk actions); all optional,
    combined with AND.

    ``data``: JSONB containment (``data @> ...``, served by the ``instances_data`` index).
    ``in_state_longer_than`` and ``sla_breached`` count for running instances only
    (active, retrying, failed): a completed or cancelled one never is "stuck".
    """

    workflow: str | None = None
    version: int | None = None
    state: str | None = None
    status: InstanceStatus | None = None
    business_key_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    data: Mapping[str, Any] | None = None
    in_state_longer_than: timedelta | None = None
    sla_breached: bool | None = None
    ids: tuple[uuid.UUID, ...] | None = None


RUNNING_STATUSES = "status in ('active', 'retrying', 'failed')"


def filter_clause(
    filters: InstanceFilter, arg: Callable[[Any], str], *, now: datetime, slas: Sequence[StateSla]
) -> str:
    """The SQL condition (over ``instances``) for ``filters``; ``arg`` binds a value and
    returns its placeholder. ``slas``: the states with an SLA (for ``sla_breached``)."""
    clauses: list[str] = []
    if filters.workflow is not None:
        clauses.append(f"workflow = {arg(filters.workflow)}")
    if filters.version is not None:
        clauses.append(f"version = {arg(filters.version)}")
    if filters.state is not None:
        clauses.append(f"state = {arg(filters.state)}")
    if filters.status is not None:
        clauses.append(f"status = {arg(filters.status.value)}")
    if filters.business_key_prefix:
        prefix = _like_prefix(filters.business_key_prefix)
        clauses.append(f"business_key like {arg(prefix)}")
    for column, op, value in (
        ("created_at", ">=", filters.created_after),
        ("created_at", "<", filters.created_before),
        ("updated_at", ">=", filters.updated_after),
        ("updated_at", "<", filters.updated_before),
    ):
        if value is not None:
            clauses.append(f"{column} {op} {arg(value)}")
    if filters.data:
        clauses.append(f"data @> {arg(orjson.dumps(filters.data).decode())}::jsonb")
    if filters.ids is not None:
        clauses.append(f"id = any({arg(list(filters.ids))}::uuid[])")
    if filters.in_state_longer_than is not None:
        cutoff = now - filters.in_state_longer_than
        clauses.append(f"state_entered_at < {arg(cutoff)} and {RUNNING_STATUSES}")
    if filters.sla_breached is not None:
        breached = _breached(filters, arg, now, slas)
        clauses.append(breached if filters.sla_breached else f"not ({breached})")
    return " and ".join(clauses) or "true"


def _sla_ranges(filters: InstanceFilter, slas: Sequence[StateSla]) -> list[StateSla]:
    """The states with an SLA that ``filters`` leave in play."""
    return [
        s
        for s in slas
        if (filters.workflow is None or s.workflow == filters.workflow)
        and (filters.version is None or s.version == filters.version)
        and (filters.state is None or s.state == filters.state)
    ]


def _breached(
    filters: InstanceFilter, arg: Callable[[Any], str], now: datetime, slas: Sequence[StateSla]
) -> str:
    """Past its state's SLA: one (workflow, version, state, entered before) range per state
    with an SLA, each an ``instances_state_age`` index range."""
    ranges = [
        f"(workflow = {arg(s.workflow)} and state = {arg(s.state)} and version = "
        f"{arg(s.version)} and state_entered_at < {arg(now - s.sla)})"
        for s in _sla_ranges(filters, slas)
    ]
    if not ranges:
        return "false"
    return f"({' or '.join(ranges)}) and {RUNNING_STATUSES}"


def instance_from_row(row: asyncpg.Record) -> Instance:
    return Instance(
        id=row["id"],
        workflow=row["workflow"],
        version=row["version"],
        business_key=row["business_key"],
        state=row["state"],
        data=row["data"],
        status=InstanceStatus(row["status"]),
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        state_entered_at=row["state_entered_at"],
        error=row["error"],
    )


async def get_many(db: AsyncEngine, ids: Sequence[uuid.UUID]) -> list[Instance | None]:
    """Instances by id, in the order asked (None where missing), in one query."""
    async with driver_connection(db) as conn:
        if len(ids) == 1:
            row = await conn.fetchrow(sql.GET_INSTANCE, ids[0])
            return [None if row is None else instance_from_row(row)]
        rows = await conn.fetch(sql.GET_INSTANCES, list(set(ids)))
    found = {row["id"]: instance_from_row(row) for row in rows}
    return [found.get(i) for i in ids]


async def find(db: AsyncEngine, workflow: str, business_key: str) -> Instance:
    """The instance of ``workflow`` with ``business_key``."""
    async with driver_connection(db) as conn:
        row = await conn.fetchrow(sql.FIND_INSTANCE, workflow, business_key)
    if row is None:
        raise InstanceNotFound(f"no {workflow} instance with business key {business_key!r}")
    return instance_from_row(row)


async def history(
    db: AsyncEngine, instance_id: uuid.UUID, *, after: int = 0, limit: int = 100
) -> list[HistoryRecord]:
    """An instance's history in order; ``after`` is the last id already seen."""
    async with driver_connection(db) as conn:
        exists = await conn.fetchval("select 1 from instances where id = $1", instance_id)
        if exists is None:
            raise InstanceNotFound(f"no instance {instance_id}")
        rows = await conn.fetch(
            "select id, instance_id, revision, event_id, event_type, source, from_state,"
            " to_state, transition, payload, outcome, reason, request_id, occurred_at"
            " from history where instance_id = $1 and id > $2 order by id limit $3",
            instance_id,
            after,
            limit,
        )
    return [HistoryRecord(**dict(row)) for row in rows]


# What the first delivery of an event id ($2) to an instance ($1) did: the inbox row and
# the last history entry it wrote (none when it was parked or failed before one).
FIRST_DELIVERY = (
    "select i.outcome, h.from_state, h.to_state, h.revision, h.reason"
    " from inbox i left join lateral ("
    "   select from_state, to_state, revision, reason from history"
    "   where instance_id = i.instance_id and event_id = i.event_id"
    "   order by id desc limit 1) h on true"
    " where i.instance_id = $1 and i.event_id = $2"
)


async def first_delivery(
    db: AsyncEngine, instance_id: uuid.UUID, event_id: str
) -> asyncpg.Record | None:
    """The inbox outcome of ``event_id`` at ``instance_id`` with the from_state, to_state,
    revision and reason of its last history entry; None when no inbox row has it."""
    async with driver_connection(db) as conn:
        row: asyncpg.Record | None = await conn.fetchrow(FIRST_DELIVERY, instance_id, event_id)
    return row


class Arguments(list[Any]):
    """Positional query arguments; calling it binds one and returns its ``$n``."""

    def __call__(self, value: Any) -> str:
        self.append(value)
        return f"${len(self)}"


async def list_instances(
    db: AsyncEngine,
    filters: InstanceFilter,
    *,
    now: datetime,
    slas: Sequence[StateSla] = (),
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Instances matching ``filters`` by keyset pagination: newest first, or, for the
    stuck-instance filters (``sla_breached=True``, ``in_state_longer_than``), longest in
    their state first (see :func:`_overdue_query`)."""
    if filters.sla_breached or filters.in_state_longer_than is not None:
        return await _list_overdue(db, filters, now=now, slas=slas, limit=limit, cursor=cursor)
    arg = Arguments()
    where = filter_clause(filters, arg, now=now, slas=slas)
    if cursor is not None:
        created, last_id = _decode_cursor(cursor, NEWEST_FIRST)
        where += f" and (created_at, id) < ({arg(created)}, {arg(last_id)})"
    query = (
        f"select {sql.INSTANCE_COLUMNS} from instances where {where}"
        f" order by created_at desc, id desc limit {arg(limit + 1)}"
    )
    async with driver_connection(db) as conn:
        rows = await conn.fetch(query, *arg)
    items = tuple(instance_from_row(r) for r in rows[:limit])
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = _encode_cursor(NEWEST_FIRST, last.created_at, last.id)
    return Page(items, next_cursor)


async def _list_overdue(
    db: AsyncEngine,
    filters: InstanceFilter,
    *,
    now: datetime,
    slas: Sequence[StateSla],
    limit: int,
    cursor: str | None,
) -> Page:
    """Stuck instances, longest in their state first, by (state_entered_at, id).

    The order an operator wants for these lists is also the one that stays fast on a big
    table: each SLA state is a range of ``instances_state_age`` read in order (one
    ``union all`` branch per state, merged), and time in state a range of the partial
    index ``instances_running_age``; neither walks the table by creation time and throws
    most rows away.
    """
    arg = Arguments()
    after = ""
    if cursor is not None:
        entered, last_id = _decode_cursor(cursor, LONGEST_IN_STATE)
        after = f" and (state_entered_at, id) > ({arg(entered)}, {arg(last_id)})"
    # The breached branches are the SLA condition themselves; otherwise filter_clause keeps
    # it (sla_breached=false beside in_state_longer_than).
    within = replace(filters, sla_breached=None) if filters.sla_breached else filters
    rest = filter_clause(within, arg, now=now, slas=slas) + after
    take = arg(limit + 1)
    order = "order by state_entered_at, id"
    if filters.sla_breached:
        ranges = _sla_ranges(filters, slas)
        if not ranges:
            return Page((), None)
        branches = [
            f"(select {sql.INSTANCE_COLUMNS} from instances where workflow = {arg(s.workflow)}"
            f" and state = {arg(s.state)} and version = {arg(s.version)}"
            f" and state_entered_at < {arg(now - s.sla)} and {RUNNING_STATUSES}"
            f" and {rest} {order} limit {take})"
            for s in ranges
        ]
        query = f"select * from ({' union all '.join(branches)}) as late {order} limit {take}"
    else:
        query = (
            f"select {sql.INSTANCE_COLUMNS} from instances where {RUNNING_STATUSES}"
            f" and {rest} {order} limit {take}"
        )
    async with driver_connection(db) as conn:
        rows = await conn.fetch(query, *arg)
    items = tuple(instance_from_row(r) for r in rows[:limit])
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = _encode_cursor(LONGEST_IN_STATE, last.state_entered_at, last.id)
    return Page(items, next_cursor)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


NEWEST_FIRST = "created"
"""A cursor over (created_at, id), descending: the default order of lists."""
LONGEST_IN_STATE = "in_state"
"""A cursor over (state_entered_at, id), ascending: the order of stuck-instance lists."""


def _encode_cursor(order: str, at: datetime, instance_id: uuid.UUID) -> str:
    """``[time, id]`` for the default order (as cursors always were), ``[order, time,
    id]`` for another, so that a cursor is never read in the wrong order."""
    parts = [at.isoformat(), str(instance_id)]
    if order != NEWEST_FIRST:
        parts.insert(0, order)
    raw = orjson.dumps(parts)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, order: str) -> tuple[datetime, uuid.UUID]:
    """``cursor`` back to (time, id); InvalidRequest naming the cursor for anything that
    is not what :func:`_encode_cursor` makes for ``order``: base64url of ``[aware ISO
    8601 date-time, UUID]`` (with the order's name first, but for the default order) whose
    time stays in range once in UTC."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except ValueError:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        raise _bad_cursor(cursor, "not base64url of JSON") from None
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        given, *value = value
    else:
        given = NEWEST_FIRST
    if given != order:
        raise _bad_cursor(cursor, "it pages another list (other filters change the order)")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], str)
    ):
        raise _bad_cursor(cursor, "not a [date-time, id] pair")
    created_text, id_text = value
    try:
        created = datetime.fromisoformat(created_text)
    except ValueError:
        raise _bad_cursor(cursor, "its time is not an ISO 8601 date-time") from None
    if created.utcoffset() is None:
        raise _bad_cursor(cursor, "its time has no UTC offset")
    try:
        created = created.astimezone(UTC)
    except OverflowError:
        raise _bad_cursor(cursor, "its time is out of range") from None
    try:
        last_id = uuid.UUID(id_text)
    except ValueError:
        raise _bad_cursor(cursor, "its id is not a UUID") from None
    return created, last_id


def _bad_cursor(cursor: str, reason: str) -> InvalidRequest:
    shown = cursor if len(cursor) <= 80 else cursor[:80] + "..."
    return InvalidRequest(
        f"invalid cursor {shown!r}: {reason}; pass next_cursor from a previous page unchanged"
    )
