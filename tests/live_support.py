"""A live ``conveyor dev`` process (API and worker) for the tests that drive one from
the outside, in a browser (tests/browser) or with the client library (tests/client).

Fixtures (module scope): ``console_settings`` (a fresh migrated schema, unique topics and
group) and ``console_keys`` (API keys of each scope). :func:`serve_dev` runs the process
and yields a :class:`LiveConsole`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import upgrade
from tests.browser.flows import FAULT_DIR_VARIABLE
from tests.conftest import unique
from tests.e2e.http_support import Keys, free_port, make_keys, process_env, wait_until_serving

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class LiveConsole:
    """A running ``conveyor dev`` (API and worker) on its own schema."""

    base: str
    """The base URL, e.g. ``http://127.0.0.1:40123``."""
    keys: Keys
    settings: Settings
    log: Path
    """The process's output (its JSON logs)."""
    fault_dir: Path
    """Where a marker file named after a ``test.label_desk`` key makes its action fail."""

    @property
    def admin_key(self) -> str:
        return self.keys.admin

    @property
    def read_key(self) -> str:
        return self.keys.read

    @property
    def write_key(self) -> str:
        return self.keys.write

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (e.g. ``/ui/overview``)."""
        return f"{self.base}{path}"


@pytest.fixture(scope="module")
async def console_settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings with a fresh, migrated schema and unique topics for the test module."""
    schema = unique("b")
    isolated = base_settings.model_copy(
        update={
            "database_schema": schema,
            "topic_prefix": unique("conveyor"),
            "consumer_group": unique("group"),
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


@pytest.fixture(scope="module")
async def console_keys(console_settings: Settings) -> Keys:
    return await make_keys(console_settings)


@contextmanager
def serve_dev(settings: Settings, keys: Keys, folder: Path, modules: str) -> Iterator[LiveConsole]:
    """``conveyor dev`` on a free port loading ``modules``, with its output in
    ``folder/output.log`` and a fault folder for ``tests.browser.flows``; stopped with
    SIGTERM when the block ends."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = folder / "output.log"
    fault_dir = folder / "faults"
    fault_dir.mkdir()
    env = process_env(
        settings, port, CONVEYOR_WORKFLOW_MODULES=modules, **{FAULT_DIR_VARIABLE: str(fault_dir)}
    )
    with log.open("wb") as out:
        # The output goes to a file: a pipe nobody reads would block a chatty server.
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "dev"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(proc, base, log, START_TIMEOUT)
        yield LiveConsole(base, keys, settings, log, fault_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
