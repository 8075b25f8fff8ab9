"""``Idempotency-Key`` for starts: one request per key runs; the others get its response.

Keys are scoped by API key and endpoint: rows of ``idempotent_responses`` are keyed by
(api_key_id, key, endpoint), so one client's key never answers (or blocks) another's.

The first request with a key *claims* it: one statement inserts a row holding the
request's digest and a lease (``claimed_until``), status and body still empty. Only the
claimer runs the operation, then stores its response in the row (or, when the operation
failed, deletes the claim: errors are not stored, and the key may be used again). A later
request with the same key:

* with a different request (another digest) is refused with 422, whether the first
  request is still running or answered long ago: exactly one request's body owns a key;
* with the same request gets the stored status and body; while the claimer runs, it
  polls for them (``WAIT`` at most, then 409 with ``Retry-After``).

A claimer that crashes, or loses its connection, before storing the response leaves a
pending claim; once its lease (``LEASE``) has passed, a request with the same digest takes
the claim over (a concurrent waiter does so while it polls) and runs the operation again,
which is safe: the runtime's start key turns a repeated start into the same instance.
A claim can only be taken over with the same digest, so the key still belongs to the
first request's body.

The statements are in ``engine.store.idempotency``; this module is the protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import ConveyorError
from engine.store import idempotency as rows

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
# How long a claimer may run before a request with the same body may take its claim over.
LEASE = timedelta(seconds=10)
# How long a request with the same body waits for the claimer's response (longer than the
# lease, so that a waiter outlives a crashed claimer and takes over).
WAIT = 12.0
FIRST_POLL = 0.005
MAX_POLL = 0.1


class IdempotencyKeyReused(ConveyorError):
    """The key was used before with a different request."""

    status_code = 422
    title = "Idempotency key reused"


class IdempotencyKeyInProgress(ConveyorError):
    """The same request is still running under this key; its response is not stored yet."""

    status_code = 409
    title = "Idempotency key in use"
    headers = {"Retry-After": "1"}


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class KeyScope:
    """Whose key, and for what: a stored response answers only the same scope."""

    api_key_id: uuid.UUID
    key: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key: it runs, then :func:`complete` or :func:`release`."""

    scope: KeyScope
    digest: bytes
    lease_end: datetime


def request_hash(*parts: Any) -> bytes:
    """A digest of what identifies the request (canonical JSON: key order does not matter)."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).digest()


async def claim(
    db: AsyncEngine,
    scope: KeyScope,
    digest: bytes,
    *,
    lease: timedelta = LEASE,
    wait: float = WAIT,
) -> Claim | StoredResponse:
    """Claim the key for this request, or the response of the request that holds it.

    Returns a :class:`Claim` when this request is to run (one round trip for a new key),
    the stored response when the same request was answered (waiting up to ``wait``
    seconds while another request with the same body runs). Raises IdempotencyKeyReused
    when the key belongs to a different request, IdempotencyKeyInProgress when the
    claimer has not answered in time.
    """
    deadline = time.monotonic() + wait
    delay = FIRST_POLL
    while True:
        row = await rows.claim(db, scope.api_key_id, scope.key, scope.endpoint, digest, lease)
        if row is not None:
            if isinstance(row, rows.Claimed):
                return Claim(scope, digest, row.lease_end)
            if row.request_hash != digest:
                raise IdempotencyKeyReused(
                    f"{HEADER} {scope.key!r} was used for a different request to this "
                    "endpoint; use a new key for a new request"
                )
            if row.response is not None:
                return StoredResponse(*row.response)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IdempotencyKeyInProgress(
                f"a request with {HEADER} {scope.key!r} is still in progress; retry it later"
            )
        if row is not None:  # pending: the same request runs elsewhere
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL)


async def complete(db: AsyncEngine, held: Claim, response: StoredResponse) -> StoredResponse:
    """Store ``response`` for the claimed key; return the stored one.

    That is ``response`` itself, unless the claim was taken over (its lease passed) and
    the new claimer stored its response first.
    """
    scope = held.scope
    other = await rows.store(
        db,
        scope.api_key_id,
        scope.key,
        scope.endpoint,
        held.lease_end,
        response.status,
        response.body,
    )
    if other is None:  # ours is stored; or taken over and still running, or pruned
        return response
    return StoredResponse(*other)


async def release(db: AsyncEngine, held: Claim) -> None:
    """Give the key up without a response (the operation failed): it may be used again."""
    scope = held.scope
    await rows.release(db, scope.api_key_id, scope.key, scope.endpoint, held.lease_end)
