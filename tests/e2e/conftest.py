"""Fixtures the HTTP tests share: API keys of each scope, and the app on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.settings import Settings
from tests.e2e.http_support import Keys, make_keys, serve_in_process


@pytest.fixture
async def keys(settings: Settings) -> Keys:
    return await make_keys(settings)


@pytest.fixture
async def base(settings: Settings) -> AsyncIterator[str]:
    """The app serving the test's schema on a loopback socket; its base URL."""
    async with serve_in_process(settings) as url:
        yield url
