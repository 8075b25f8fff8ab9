"""The client library's tests: a real ``conveyor dev`` process (API and worker) per test
module, on a fresh schema and its own topics, with API keys of each scope.

The process loads the commerce workflows, ``tests.browser.flows`` (a label desk whose
action fails while a marker file names the instance's key) and ``tests.evolution_flows``
(``test.parcel`` v1 and v2 with a migration, and a guard that refuses small payments).
The settings and keys fixtures and the process come from :mod:`tests.live_support`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from conveyor_client import AsyncConveyor
from engine.settings import Settings
from tests.e2e.http_support import Keys
from tests.live_support import LiveConsole, console_keys, console_settings, serve_dev

__all__ = ["console_keys", "console_settings"]  # fixtures used here, defined there

MODULES = "workflows,tests.browser.flows,tests.evolution_flows"


@pytest.fixture(scope="module")
def live(
    console_settings: Settings, console_keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveConsole]:
    """``conveyor dev`` for the test module (API and worker in one process), stopped with
    SIGTERM afterwards; its output goes to ``live.log``."""
    folder = tmp_path_factory.mktemp("conveyor-client")
    with serve_dev(console_settings, console_keys, folder, MODULES) as live:
        yield live


@pytest.fixture(scope="module")
async def live_topics(live: LiveConsole) -> AsyncIterator[str]:
    """The live process's topic prefix; its topics are deleted after the module."""
    yield live.settings.topic_prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=live.settings.kafka_servers())
    await admin.start()
    try:
        prefix = f"{live.settings.topic_prefix}."
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
async def admin(live: LiveConsole) -> AsyncIterator[AsyncConveyor]:
    """An async client with the admin key."""
    async with AsyncConveyor(live.base, live.keys.admin, backoff=0.05) as client:
        yield client


@pytest.fixture
async def writer(live: LiveConsole) -> AsyncIterator[AsyncConveyor]:
    """An async client with a write key (start, send; no operator calls)."""
    async with AsyncConveyor(live.base, live.keys.write, backoff=0.05) as client:
        yield client
