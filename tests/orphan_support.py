"""Orphans for tests: instances made by the workflows as they were
(:mod:`tests.orphan_flows_old`), to be looked at with the workflows as redeployed
(:mod:`tests.orphan_flows`): v1 gone, and v2 without its state ``legacy_review``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.model import Event
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings

OLD, NEW = "tests.orphan_flows_old", "tests.orphan_flows"


@dataclass(frozen=True)
class Seeded:
    v1: uuid.UUID  # test.orphan v1, state open
    failed: uuid.UUID  # test.orphan v1, state open, failed
    legacy: uuid.UUID  # test.orphan v2, state legacy_review
    fine: uuid.UUID  # test.orphan v2, state open


async def seed(settings: Settings, db: AsyncEngine) -> Seeded:
    """Instances made by the workflows before the redeploy (and one that ended, ignored)."""
    runtime = Runtime(db, load_workflows([OLD]), topic_prefix=settings.topic_prefix)
    v1 = await runtime.start("test.orphan", "v1-a", {"key": "v1-a"}, version=1)
    failed = await runtime.start("test.orphan", "v1-b", {"key": "v1-b"}, version=1)
    boom = await runtime.send(Event("orphan.fail", "fail-b", instance_id=failed.instance.id))
    assert boom.status == "failed"
    ended = await runtime.start("test.orphan", "v1-c", {"key": "v1-c"}, version=1)
    done = await runtime.send(Event("orphan.poke", "poke-c", instance_id=ended.instance.id))
    assert done.status == "applied"
    legacy = await runtime.start("test.orphan", "v2-a", {"key": "v2-a"})
    moved = await runtime.send(Event("orphan.review", "rev-a", instance_id=legacy.instance.id))
    assert moved.to_state == "legacy_review"
    fine = await runtime.start("test.orphan", "v2-b", {"key": "v2-b"})
    return Seeded(v1.instance.id, failed.instance.id, legacy.instance.id, fine.instance.id)
