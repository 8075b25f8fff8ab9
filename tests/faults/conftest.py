"""Fault tests restart, stop and cut off the real services; each leaves the stack up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from engine.settings import Settings
from tests.faults.support import stack


@pytest.fixture(autouse=True)
async def stack_restored() -> AsyncIterator[None]:
    """Whatever a test did to PostgreSQL or Kafka, the next test finds both up."""
    yield
    await stack("up")


@pytest.fixture
async def topics_removed(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[None]:
    """The topics the test's workers created are deleted afterwards."""
    yield
    names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
    if names:
        await kafka_admin.delete_topics(names)
