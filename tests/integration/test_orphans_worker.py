"""Kafka events and timers for orphans (instances whose workflow, version or state the
loaded workflows lack): the event goes to the dead letters as ``orphaned``, naming what
is missing, with no traceback; a timer is refused, and the scheduler goes on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import deadletters
from engine.clock import utc_now
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from engine.settings import Settings
from engine.store.dead_letters import DeadLetterFilter, DeadLetterRecord
from tests.conftest import wait_for
from tests.integration.test_dead_letters_worker import ce
from tests.integration.test_worker import consume, produce, running_worker
from tests.orphan_support import NEW, OLD, seed


@pytest.fixture
async def worker_settings(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[Settings]:
    """The test's settings with the redeployed workflows; its topics deleted afterwards."""
    yield settings.model_copy(update={"workflow_modules": [NEW], "allow_orphans": True})
    names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
    if names:
        await kafka_admin.delete_topics(names)


async def test_a_kafka_event_for_an_orphan_is_dead_lettered_as_orphaned(
    worker_settings: Settings,
    settings: Settings,
    db: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeded = await seed(settings, db)
    topic = f"{worker_settings.topic_prefix}.in"
    messages = [
        ce("k-v1", "orphan.poke", "v1-a", {}),
        ce("k-legacy", "orphan.poke", "v2-a", {}),
        ce("k-fine", "orphan.poke", "v2-b", {}),
    ]

    async def stored() -> list[DeadLetterRecord] | None:
        page = await deadletters.list_dead_letters(db, DeadLetterFilter(), limit=10)
        return list(page.items) if len(page.items) >= 2 else None

    with caplog.at_level(logging.INFO):
        async with running_worker(worker_settings):
            await produce(worker_settings, topic, messages)
            letters = await wait_for(stored)
            reader = Runtime(db, load_workflows([NEW]))

            async def fine_done() -> bool:
                return (await reader.get(seeded.fine)).state == "done"

            await wait_for(fine_done)
    by_event = {letter.event_id: letter for letter in letters}
    assert set(by_event) == {"k-v1", "k-legacy"}
    assert {letter.reason for letter in letters} == {"orphaned"}
    assert "test.orphan v1 is not deployed" in by_event["k-v1"].detail
    assert "does not declare state 'legacy_review'" in by_event["k-legacy"].detail
    published = await consume(worker_settings, f"{worker_settings.topic_prefix}.deadletter", 2)
    assert len(published) == 2
    # Once v1 is deployed again, the replay applies the very event (its id was not used up).
    redeployed = Runtime(db, load_workflows([OLD]), topic_prefix=worker_settings.topic_prefix)
    replayed = await deadletters.replay(redeployed, by_event["k-v1"].id)
    assert replayed.status == "replayed"
    assert (await redeployed.get(seeded.v1)).state == "done"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err


async def test_a_timer_of_an_orphan_is_refused_and_the_scheduler_goes_on(
    settings: Settings, db: AsyncEngine
) -> None:
    seeded = await seed(settings, db)
    later = utc_now() + timedelta(hours=2)
    runtime = Runtime(db, load_workflows([NEW]), clock=lambda: later)
    outcomes = await TimerScheduler(runtime).fire_due()
    orphaned = [o for o in outcomes if o.instance_id == seeded.v1]
    assert [o.status for o in orphaned] == ["rejected"]
    assert orphaned[0].rejection is not None
    assert orphaned[0].rejection.reason == "orphaned"
    assert await TimerScheduler(runtime).fire_due() == []  # refused once, not again
