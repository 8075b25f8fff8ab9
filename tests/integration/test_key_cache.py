"""The API's key cache (api.auth.KeyCache) against the real api_keys table: concurrent
lookups of one key share a query's answer, a key in use is verified again in the
background, and a revoked key is refused once that happens."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import KeyCache
from engine.auth import create_api_key, revoke_api_key
from tests.conftest import wait_for


async def test_concurrent_lookups_of_one_key_agree(db: AsyncEngine) -> None:
    created = await create_api_key(db, "burst", "read")
    cache = KeyCache()
    keys = await asyncio.gather(*(cache.verify(db, created.secret) for _ in range(20)))
    assert {k.id if k is not None else None for k in keys} == {created.key.id}
    assert cache.cached(db, created.secret) == keys[0]
    unknown = await asyncio.gather(*(cache.verify(db, created.secret + "x") for _ in range(5)))
    assert unknown == [None] * 5
    await cache.close()


async def test_a_key_in_use_is_verified_again_before_its_entry_runs_out(
    db: AsyncEngine,
) -> None:
    created = await create_api_key(db, "revoked-while-cached", "read")
    # Refreshed on every use, valid for a minute: only the refresh can refuse it in time.
    cache = KeyCache(ttl=60.0, refresh=0.0)
    assert await cache.verify(db, created.secret) is not None
    assert await revoke_api_key(db, created.key.prefix)

    async def refused() -> bool:
        return cache.cached(db, created.secret) is None

    await wait_for(refused, timeout=5)
    assert await cache.verify(db, created.secret) is None
    await cache.close()
