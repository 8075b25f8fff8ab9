"""Finding orphans: live instances whose workflow, version or state the registry lacks
(pure, no database); and planning refusing their triggers as ``orphaned``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson

from engine.model import Event, Instance, InstanceStatus, InstanceTrigger, TimerFiring
from engine.orphans import (
    ORPHANED_PROBLEM_TYPE,
    LiveCount,
    Orphan,
    find_orphans,
    format_report,
    missing_definition,
)
from engine.planning import Loaded, claims_event_id, plan
from engine.registry import Registry, load_workflows
from engine.wire.topics import Topics

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def registry() -> Registry:
    return load_workflows(["tests.orphan_flows"])  # test.orphan v2 only: open, done


def test_what_an_instance_lacks_is_named_first_workflow_then_version_then_state() -> None:
    reg = registry()
    assert missing_definition(reg, "test.orphan", 2, "open") is None
    assert missing_definition(reg, "test.gone", 2, "open") == "workflow"
    assert missing_definition(reg, "test.orphan", 1, "open") == "version"
    assert missing_definition(reg, "test.orphan", 2, "legacy_review") == "state"


def test_orphans_are_grouped_by_what_is_missing_and_counted() -> None:
    counts = [
        LiveCount("test.orphan", 2, "open", 5),
        LiveCount("test.orphan", 1, "open", 1000),
        LiveCount("test.orphan", 1, "done", 203),
        LiveCount("test.orphan", 2, "legacy_review", 12),
        LiveCount("test.gone", 3, "a", 1),
    ]
    orphans = find_orphans(registry(), counts)
    assert orphans == [
        Orphan("test.gone", 3, None, "workflow", 1),
        Orphan("test.orphan", 1, None, "version", 1203),
        Orphan("test.orphan", 2, "legacy_review", "state", 12),
    ]
    assert format_report(orphans) == [
        "test.gone v3: 1 instance, workflow not deployed",
        "test.orphan v1: 1,203 instances, version not deployed",
        "test.orphan v2 state 'legacy_review': 12 instances, state not declared",
    ]


def test_no_orphans_when_everything_live_is_defined() -> None:
    assert find_orphans(registry(), [LiveCount("test.orphan", 2, "open", 7)]) == []
    assert find_orphans(registry(), []) == []


def instance(version: int, state: str) -> Instance:
    return Instance(
        id=uuid.uuid4(),
        workflow="test.orphan",
        version=version,
        business_key="k",
        state=state,
        data={"key": "k"},
        status=InstanceStatus.ACTIVE,
        revision=1,
        created_at=T0,
        updated_at=T0,
        state_entered_at=T0,
    )


async def test_planning_refuses_a_trigger_for_an_orphan_without_claiming_its_id() -> None:
    old, renamed = instance(1, "open"), instance(2, "legacy_review")
    timer = TimerFiring(uuid.uuid4(), renamed.id, "idle", "legacy_review")
    triggers: list[InstanceTrigger] = [
        Event("orphan.poke", "e1", instance_id=old.id),
        Event("orphan.poke", "e2", instance_id=renamed.id),
        timer,
    ]
    loaded = Loaded(
        [t.instance_id for t in triggers], [old, renamed], live_timers=frozenset({timer.event_id})
    )
    planned = await plan(registry(), Topics("t"), triggers, loaded, T0)
    outcomes = [r.outcome for r in planned.results]
    assert [o.status for o in outcomes] == ["rejected", "rejected", "rejected"]
    rejections = [o.rejection for o in outcomes]
    assert [r.reason if r else None for r in rejections] == ["orphaned"] * 3
    assert [r.missing if r else None for r in rejections] == ["version", "state", "state"]
    assert rejections[0] is not None
    assert "test.orphan v1 is not deployed" in rejections[0].message
    assert not any(claims_event_id(r) for r in rejections)
    assert all(r.failure is None for r in planned.results)
    rows = {k: orjson.loads(v) for k, v in planned.writes.values().items() if k != "now"}
    assert [(h["event_id"], h["outcome"]) for h in rows["history"]] == [
        ("e1", "rejected"),
        ("e2", "rejected"),
        (timer.event_id, "rejected"),
    ]
    assert not rows.get("inbox")


def test_the_api_and_the_engine_name_the_same_orphaned_problem_type() -> None:
    from api.problems import problem_type

    assert problem_type("orphaned") == ORPHANED_PROBLEM_TYPE == "/problems/orphaned"
