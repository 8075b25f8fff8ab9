"""Fixtures of the runtime tests: a runtime over the test's schema, on a fake clock."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.runtime import Runtime
from engine.settings import Settings
from tests.integration.test_runtime import FakeClock, registry


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand (timers and retries come due when it says)."""
    return FakeClock()


@pytest.fixture
async def runtime(db: AsyncEngine, settings: Settings, clock: FakeClock) -> Runtime:
    """The order workflow and the test counter, on the fake clock."""
    return Runtime(db, registry(), topic_prefix=settings.topic_prefix, clock=clock)
