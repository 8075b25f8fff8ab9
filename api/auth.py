"""API key authentication and scope checks for every route but the public ones.

Routes declare the scope they need with ``ctx_scope=...``; a route without one needs
``read`` for GET/HEAD/OPTIONS and ``write`` otherwise, unless it is marked
``ctx_public=True`` (health, readiness) or belongs to the OpenAPI docs. The key comes in
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Verified keys are cached in-process for ``KEY_CACHE_TTL`` seconds, so a request costs no
extra query; a revoked key therefore stops working within that time. A key still in use
is verified again in the background before its entry runs out (no request waits for it),
and concurrent requests with a key not cached share one lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sanic import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.auth import ApiKey, Forbidden, Scope, Unauthenticated, hash_key, verify_api_key
from engine.observability import bind_log_context, get_logger

KEY_CACHE_TTL = 5.0
KEY_CACHE_SIZE = 10_000
REFRESH_AHEAD = 0.8
"""A cached key is verified again once this share of its TTL has passed (when in use)."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
log = get_logger("conveyor.api")


@dataclass
class KeyCache:
    """Verified keys by hash, each until its deadline. Unknown keys are not cached.

    An entry's deadline moves only when the database has verified the key again, so a
    revoked key is refused at most ``ttl`` after its last verification.
    """

    ttl: float = KEY_CACHE_TTL
    size: int = KEY_CACHE_SIZE
    refresh: float = REFRESH_AHEAD  # share of ``ttl`` after which a key in use is refreshed
    # digest -> (key, refresh after, deadline)
    _entries: dict[bytes, tuple[ApiKey, float, float]] = field(default_factory=dict)
    # Lookups in flight by digest: what concurrent callers share.
    _lookups: dict[bytes, asyncio.Task[ApiKey | None]] = field(default_factory=dict)

    def cached(self, db: AsyncEngine, secret: str) -> ApiKey | None:
        """The verified key for ``secret`` if it was verified less than ``ttl`` ago; past
        the refresh point, a lookup starts in the background (the entry still serves)."""
        digest = hash_key(secret)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        key, refresh_at, deadline = entry
        now = time.monotonic()
        if now >= deadline:
            return None
        if now >= refresh_at and digest not in self._lookups:
            self._lookup(db, secret, digest)
        return key

    async def verify(self, db: AsyncEngine, secret: str) -> ApiKey | None:
        key = self.cached(db, secret)
        if key is not None:
            return key
        digest = hash_key(secret)
        lookup = self._lookups.get(digest) or self._lookup(db, secret, digest)
        return await asyncio.shield(lookup)

    def _lookup(self, db: AsyncEngine, secret: str, digest: bytes) -> asyncio.Task[ApiKey | None]:
        task = asyncio.get_running_loop().create_task(self._fetch(db, secret, digest))
        self._lookups[digest] = task
        task.add_done_callback(self._settled)
        return task

    async def _fetch(self, db: AsyncEngine, secret: str, digest: bytes) -> ApiKey | None:
        try:
            key = await verify_api_key(db, secret)
        finally:
            self._lookups.pop(digest, None)
        if key is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= self.size:
            self._entries.clear()
        now = time.monotonic()
        self._entries[digest] = (key, now + self.ttl * self.refresh, now + self.ttl)
        return key

    @staticmethod
    def _settled(task: asyncio.Task[ApiKey | None]) -> None:
        # A background refresh that failed (the database is down, say) changes nothing:
        # the entry runs out at its deadline, and the next request looks the key up itself
        # and answers the error. Retrieving it here keeps asyncio from logging it as lost.
        if not task.cancelled() and task.exception() is not None:
            log.debug("API key lookup failed", error=repr(task.exception()))

    async def close(self) -> None:
        """Cancel the lookups in flight (the app is stopping)."""
        tasks = list(self._lookups.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``; None when neither is given.

    Keys are ASCII: anything else (Sanic hands over bytes that are not UTF-8 as surrogate
    escapes) is refused here with a 401, before it is hashed or logged.
    """
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token: str = value.strip()
            return _ascii_key(token)
        return None
    key: str | None = request.headers.get("x-api-key") or None
    return None if key is None else _ascii_key(key)


def _ascii_key(secret: str) -> str:
    if not secret.isascii():
        raise Unauthenticated("the API key is malformed: API keys are ASCII")
    return secret


def needed_scope(request: Request) -> Scope | None:
    """The scope the matched route needs; None for public routes."""
    route = request.route
    if route is None:  # no route matched: the 404/405 answer needs no key
        return None
    if getattr(route.ctx, "public", False) or ".openapi." in route.name:
        return None
    scope: Scope | None = getattr(route.ctx, "scope", None)
    if scope is not None:
        return scope
    return "read" if request.method in READ_METHODS else "write"


def authenticate(request: Request) -> Coroutine[Any, Any, None] | None:
    """Request middleware: 401 without a valid key, 403 without the needed scope.

    A key verified recently is checked without a coroutine (the common case); otherwise
    the returned awaitable looks it up.
    """
    scope = needed_scope(request)
    if scope is None:
        return None
    secret = presented_key(request)
    if secret is None:
        raise Unauthenticated("an API key is required: Authorization: Bearer <key> or X-API-Key")
    cache: KeyCache = request.app.ctx.key_cache
    key = cache.cached(request.app.ctx.db, secret)
    if key is None:
        return _look_up(request, cache, secret, scope)
    _admit(request, key, scope)
    return None


async def _look_up(request: Request, cache: KeyCache, secret: str, scope: Scope) -> None:
    key = await cache.verify(request.app.ctx.db, secret)
    if key is None:
        raise Unauthenticated("the API key is unknown or revoked")
    _admit(request, key, scope)


def _admit(request: Request, key: ApiKey, scope: Scope) -> None:
    request.ctx.api_key = key
    bind_log_context(api_key=key.prefix)
    if not key.allows(scope):
        raise Forbidden(
            f"API key {key.prefix} ({', '.join(key.scopes)}) lacks the {scope!r} scope "
            "this operation needs"
        )
