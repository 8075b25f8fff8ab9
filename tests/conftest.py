"""Shared fixtures. Integration fixtures talk to the real local stack (make stack-up).

Isolation: each test that needs the database gets a fresh schema with the migrations
applied; each test that needs Kafka gets unique topic names and consumer groups.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import upgrade

pytest_plugins = ["engine.testing.pytest_plugin"]  # the workflow_env fixture


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def wait_for(
    condition: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns a truthy value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture
async def settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings whose database schema is fresh and migrated; dropped afterwards."""
    schema = unique("t")
    isolated = base_settings.model_copy(
        update={
            "database_schema": schema,
            "topic_prefix": unique("conveyor"),
            "consumer_group": unique("group"),
            "database_pool_size": 20,
        }
    )
    await upgrade(isolated)
    yield isolated
    admin = create_engine(base_settings, pool_size=1)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{schema}" cascade'))
    finally:
        await admin.dispose()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[AsyncEngine]:
    db = create_engine(settings)
    yield db
    await db.dispose()


@pytest.fixture
async def kafka_admin(base_settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=base_settings.kafka_servers())
    await admin.start()
    yield admin
    await admin.close()


@pytest.fixture
async def make_topic(
    kafka_admin: AIOKafkaAdminClient,
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Create unique topics for one test; delete them afterwards."""
    created: list[str] = []

    async def _make(prefix: str = "topic", partitions: int = 3) -> str:
        name = unique(prefix)
        await kafka_admin.create_topics(
            [NewTopic(name=name, num_partitions=partitions, replication_factor=1)]
        )
        created.append(name)
        return name

    yield _make
    if created:
        await kafka_admin.delete_topics(created)
