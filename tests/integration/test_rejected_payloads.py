"""A refused event leaves a bounded history row; an applied one keeps its whole payload."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.model import Event
from engine.registry import Registry
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.writeset import REJECTED_PAYLOAD_MAX_BYTES, rejected_payload
from tests import flows

BIG = "x" * 900_000  # the 900 KB refused events that grew one history to 4.5 MB


@pytest.fixture
async def runtime(db: AsyncEngine, settings: Settings) -> Runtime:
    registry = Registry()
    registry.register(flows.Counter)
    return Runtime(db, registry, topic_prefix=settings.topic_prefix)


async def history_rows(db: AsyncEngine, instance_id: uuid.UUID) -> list[Any]:
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "select event_id, outcome, payload, pg_column_size(payload) as size"
                " from history where instance_id = :i order by id"
            ),
            {"i": instance_id},
        )
        return list(result.all())


def compact(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


async def test_a_large_refused_event_leaves_a_small_marker_that_still_correlates(
    runtime: Runtime, db: AsyncEngine
) -> None:
    started = (await runtime.start("test.counter", "R-1", {"key": "R-1"})).instance
    payload = {"label": BIG}
    closed = await runtime.send(Event("counter.close", "close-1", {}, instance_id=started.id))
    assert closed.status == "applied"
    # A late event for the closed instance: refused as inactive, with its 900 KB.
    refused = await runtime.send(Event("counter.tick", "late-1", payload, instance_id=started.id))
    assert refused.status == "rejected"
    rows = await history_rows(db, started.id)
    late = next(r for r in rows if r.event_id == "late-1")
    assert late.outcome == "rejected"
    raw = compact(payload)
    assert late.payload == {
        "_truncated": True,
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    assert late.size < 200  # not 900 KB


async def test_a_large_invalid_payload_refused_by_an_active_instance_is_bounded_too(
    runtime: Runtime, db: AsyncEngine
) -> None:
    started = (await runtime.start("test.counter", "R-2", {"key": "R-2"})).instance
    # Tick.by must be an integer: refused as invalid_payload, with its 900 KB.
    refused = await runtime.send(
        Event("counter.tick", "bad-1", {"by": BIG}, instance_id=started.id)
    )
    assert refused.status == "rejected"
    assert refused.rejection is not None
    assert refused.rejection.reason == "invalid_payload"
    (row,) = [r for r in await history_rows(db, started.id) if r.event_id == "bad-1"]
    assert row.payload["_truncated"] is True
    assert row.payload["bytes"] == len(compact({"by": BIG}))
    assert row.size < 200


async def test_a_small_refused_event_keeps_its_payload(runtime: Runtime, db: AsyncEngine) -> None:
    started = (await runtime.start("test.counter", "R-3", {"key": "R-3"})).instance
    payload = {"by": "not a number", "note": "y" * 1000}
    refused = await runtime.send(Event("counter.tick", "bad-2", payload, instance_id=started.id))
    assert refused.status == "rejected"
    (row,) = [r for r in await history_rows(db, started.id) if r.event_id == "bad-2"]
    assert row.payload == payload


async def test_an_applied_large_event_keeps_its_whole_payload(
    runtime: Runtime, db: AsyncEngine
) -> None:
    started = (await runtime.start("test.counter", "R-4", {"key": "R-4"})).instance
    payload = {"label": BIG}
    applied = await runtime.send(Event("counter.label", "big-1", payload, instance_id=started.id))
    assert applied.status == "applied"
    (row,) = [r for r in await history_rows(db, started.id) if r.event_id == "big-1"]
    assert row.outcome == "applied"
    assert row.payload == payload


def test_the_bound_is_on_the_compact_json_size() -> None:
    # A payload whose JSON is exactly the bound is kept; one byte more is not.
    overhead = len(compact({"k": ""}))
    at_bound = {"k": "z" * (REJECTED_PAYLOAD_MAX_BYTES - overhead)}
    assert len(compact(at_bound)) == REJECTED_PAYLOAD_MAX_BYTES
    assert orjson.loads(orjson.dumps(rejected_payload(at_bound))) == at_bound
    over = {"k": "z" * (REJECTED_PAYLOAD_MAX_BYTES - overhead + 1)}
    marker = orjson.loads(orjson.dumps(rejected_payload(over)))
    assert marker == {
        "_truncated": True,
        "bytes": REJECTED_PAYLOAD_MAX_BYTES + 1,
        "sha256": hashlib.sha256(compact(over)).hexdigest(),
    }
