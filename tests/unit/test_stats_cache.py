"""/v1/stats shares one count between concurrent requests and for a short while after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.stats import StatsCache


async def test_concurrent_requests_share_one_count_and_a_failure_is_not_kept() -> None:
    cache = StatsCache(ttl=60)
    calls: list[str | None] = []
    release = asyncio.Event()

    async def count(key: str | None) -> dict[str, Any]:
        calls.append(key)
        await release.wait()
        return {"n": len(calls)}

    waiting = [asyncio.create_task(cache.get("order", lambda: count("order"))) for _ in range(5)]
    release.set()
    answers = await asyncio.gather(*waiting)
    assert answers == [{"n": 1}] * 5
    assert await cache.get("order", lambda: count("order")) == {"n": 1}  # within the ttl
    assert await cache.get(None, lambda: count(None)) == {"n": 2}  # another key counts
    assert calls == ["order", None]

    async def broken() -> dict[str, Any]:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError):
        await cache.get("warehouse", broken)
    assert await cache.get("warehouse", lambda: count("warehouse")) == {"n": 3}


async def test_an_answer_is_counted_again_after_the_ttl() -> None:
    cache = StatsCache(ttl=0)
    counted = 0

    async def count() -> dict[str, Any]:
        nonlocal counted
        counted += 1
        return {"n": counted}

    assert await cache.get(None, count) == {"n": 1}
    assert await cache.get(None, count) == {"n": 2}
