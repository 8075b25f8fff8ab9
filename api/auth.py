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
from dataclasses import dataclass, field

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

    async def verify(self, engine: AsyncEngine, secret: str) -> ApiKey | None:
        digest = hash_key(secret)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[1] > now:
            return entry[0]
        key = await verify_api_key(engine, secret)
        if key is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[digest] = (key, now + self.ttl)
        return key


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token: str = value.strip()
            return token
        return None
    key: str | None = request.headers.get("x-api-key") or None
    return key


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


async def authenticate(request: Request) -> None:
    """Request middleware: 401 without a valid key, 403 without the needed scope."""
    scope = needed_scope(request)
    if scope is None:
        return
    secret = presented_key(request)
    if secret is None:
        raise Unauthenticated("an API key is required: Authorization: Bearer <key> or X-API-Key")
    cache: KeyCache = request.app.ctx.key_cache
    key = await cache.verify(request.app.ctx.db, secret)
    if key is None:
        raise Unauthenticated("the API key is unknown or revoked")
    request.ctx.api_key = key
    bind_log_context(api_key=key.prefix)
    if not key.allows(scope):
        raise Forbidden(
            f"API key {key.prefix} ({', '.join(key.scopes)}) lacks the {scope!r} scope "
            "this operation needs"
        )
