"""API key authentication and scope checks for every route but the public ones.

Routes declare the scope they need with ``ctx_scope=...``; a route without one needs
``read`` for GET/HEAD/OPTIONS and ``write`` otherwise, unless it is marked
``ctx_public=True`` (health, readiness) or belongs to the OpenAPI docs. The key comes in
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Verified keys are cached in-process for ``KEY_CACHE_TTL`` seconds, so a GET costs no
extra query; a revoked key therefore stops working within that time.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sanic import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.auth import ApiKey, Forbidden, Scope, Unauthenticated, hash_key, verify_api_key
from engine.observability import bind_log_context

KEY_CACHE_TTL = 5.0
KEY_CACHE_SIZE = 10_000
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class KeyCache:
    """Verified keys by hash, each until its deadline. Unknown keys are not cached."""

    ttl: float = KEY_CACHE_TTL
    size: int = KEY_CACHE_SIZE
    _entries: dict[bytes, tuple[ApiKey, float]] = field(default_factory=dict)

    def cached(self, secret: str) -> ApiKey | None:
        """The verified key for ``secret`` if it was verified less than ``ttl`` ago."""
        entry = self._entries.get(hash_key(secret))
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None

    async def verify(self, db: AsyncEngine, secret: str) -> ApiKey | None:
        key = self.cached(secret)
        if key is not None:
            return key
        digest = hash_key(secret)
        key = await verify_api_key(db, secret)
        if key is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[digest] = (key, time.monotonic() + self.ttl)
        return key


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
    key = cache.cached(secret)
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
