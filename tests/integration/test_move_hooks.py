"""An operator's move with ``run_hooks``, on the runtime over the real PostgreSQL.

By default a move runs nothing: the data stays and nothing is sent. With ``run_hooks`` the
on-exit hooks of the state it leaves, then the on-enter hooks of the state it enters, run
as on a transition: their data changes are stored and their messages queued to the
outbox (ids derived from the move's event id). A hook that raises moves nothing.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.decide import MESSAGE_NAMESPACE
from engine.ids import name_id
from engine.model import InstanceStatus
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.writeset import OUTBOUND_NAMESPACE
from tests.integration.test_runtime import FakeClock, registry, rows
from tests.move_flows import Hooked


@pytest.fixture
async def hooked(db: AsyncEngine, settings: Settings, clock: FakeClock) -> Runtime:
    return Runtime(db, registry(Hooked), topic_prefix=settings.topic_prefix, clock=clock)


async def outbox(db: AsyncEngine, instance_id: uuid.UUID) -> list[tuple[str, str, Any]]:
    """The instance's outbox messages other than ``state_changed``: (id, topic, CloudEvent)."""
    found = await rows(
        db,
        "select message_id, topic, value from outbox where instance_id = :i "
        "and topic not like '%.instances' order by id",
        i=instance_id,
    )
    return [(str(m), t, orjson.loads(v)) for m, t, v in found]


async def test_a_move_runs_no_hooks_unless_asked(hooked: Runtime, db: AsyncEngine) -> None:
    started = (await hooked.start("test.move_hooks", "L-1", {"key": "L-1"})).instance
    moved = await operations.move(hooked, started.id, state="review", reason="by hand")
    assert (moved.state, moved.data) == ("review", started.data)
    assert await outbox(db, started.id) == []
    last = (await hooked.history(started.id))[-1]
    assert (last.outcome, last.payload) == (
        "moved",
        {"state": "review", "reason": "by hand", "run_hooks": False},
    )


async def test_a_move_with_run_hooks_runs_exit_then_enter_hooks_and_sends_their_messages(
    hooked: Runtime, db: AsyncEngine, settings: Settings, clock: FakeClock
) -> None:
    started = (await hooked.start("test.move_hooks", "L-2", {"key": "L-2"})).instance
    clock.advance(timedelta(minutes=5))
    moved = await operations.move(
        hooked, started.id, state="review", reason="skip", run_hooks=True, request_id="r-1"
    )
    assert (moved.state, moved.status, moved.revision) == (
        "review",
        InstanceStatus.ACTIVE,
        started.revision + 1,
    )
    assert moved.data["visits"] == ["exit open to review", "enter review on conveyor.move"]
    assert moved.data["entered_at"] == clock.now.isoformat()
    stored = await hooked.get(started.id)
    assert stored.data == moved.data

    event_id = f"move:{started.id}:{moved.revision}"
    ids = [
        name_id(OUTBOUND_NAMESPACE, f"{started.id}/{name_id(MESSAGE_NAMESPACE, f'{event_id}/{i}')}")
        for i in (0, 1)
    ]
    sent = await outbox(db, started.id)
    assert [(m, t, c["type"]) for m, t, c in sent] == [
        (ids[0], f"{settings.topic_prefix}.events", "ledger.left"),
        (ids[1], f"{settings.topic_prefix}.commands", "ledger.recount"),
    ]
    assert sent[0][2]["data"] == {"key": "L-2", "from": "open"}
    last = (await hooked.history(started.id))[-1]
    assert (last.event_id, last.outcome, last.payload, last.request_id) == (
        event_id,
        "moved",
        {"state": "review", "reason": "skip", "run_hooks": True},
        "r-1",
    )

    # Into a final state: its enter hook runs, the instance ends.
    ended = await operations.move(hooked, started.id, state="done", run_hooks=True)
    assert (ended.state, ended.status) == ("done", InstanceStatus.COMPLETED)
    assert ended.data["visits"][-1] == "enter done on conveyor.move"
    assert [c["type"] for _, _, c in await outbox(db, started.id)][-1] == "ledger.recount"


async def test_a_hook_that_raises_refuses_the_move_and_changes_nothing(
    hooked: Runtime, db: AsyncEngine
) -> None:
    started = (
        await hooked.start("test.move_hooks", "L-3", {"key": "L-3", "broken": True})
    ).instance
    history = await hooked.history(started.id)
    count = "select count(*) from outbox where instance_id = :i"
    messages = await rows(db, count, i=started.id)
    with pytest.raises(operations.MoveFailed, match="ledger service unreachable") as refused:
        await operations.move(hooked, started.id, state="review", run_hooks=True)
    assert refused.value.status_code == 409
    assert "RuntimeError" in str(refused.value)
    unchanged = await hooked.get(started.id)
    assert (unchanged.state, unchanged.revision, unchanged.data) == (
        "open",
        started.revision,
        started.data,
    )
    assert await hooked.history(started.id) == history
    assert await rows(db, count, i=started.id) == messages
    # Without hooks the same move goes through.
    moved = await operations.move(hooked, started.id, state="review")
    assert (moved.state, moved.data) == ("review", started.data)
