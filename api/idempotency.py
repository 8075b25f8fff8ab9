"""``Idempotency-Key`` for starts: the first response is stored and replayed on a retry.

A retry with the same key and the same request gets the original status and body. The
same key with a different request is refused (422), so a client bug cannot pass for a
retry. Rows live in ``idempotent_responses``, keyed by (key, endpoint).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import ConveyorError
from engine.store.database import driver_connection

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200


class IdempotencyKeyReused(ConveyorError):
    """The key was used before with a different request."""

    status_code = 422
    title = "Idempotency key reused"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


def request_hash(*parts: Any) -> bytes:
    """A digest of what identifies the request (canonical JSON: key order does not matter)."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).digest()


async def find(
    engine: AsyncEngine, key: str, endpoint: str, digest: bytes
) -> StoredResponse | None:
    """The stored response for (key, endpoint); raises when it answered another request."""
    async with driver_connection(engine) as conn:
        row = await conn.fetchrow(
            "select request_hash, status, body from idempotent_responses"
            " where key = $1 and endpoint = $2",
            key,
            endpoint,
        )
    if row is None:
        return None
    if bytes(row["request_hash"]) != digest:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used for a different request to this endpoint; "
            "use a new key for a new request"
        )
    return StoredResponse(row["status"], bytes(row["body"]))


async def remember(
    engine: AsyncEngine, key: str, endpoint: str, digest: bytes, response: StoredResponse
) -> StoredResponse:
    """Store ``response`` unless a concurrent request stored one first; return the winner."""
    async with driver_connection(engine) as conn:
        inserted = await conn.fetchval(
            "insert into idempotent_responses (key, endpoint, request_hash, status, body)"
            " values ($1, $2, $3, $4, $5) on conflict do nothing returning true",
            key,
            endpoint,
            digest,
            response.status,
            response.body,
        )
        if inserted:
            return response
        # A concurrent request stored its response first (this statement waited for it).
        row = await conn.fetchrow(
            "select status, body from idempotent_responses where key = $1 and endpoint = $2",
            key,
            endpoint,
        )
    if row is None:  # the row was cleaned up meanwhile: ours is as good
        return response
    return StoredResponse(row["status"], bytes(row["body"]))
