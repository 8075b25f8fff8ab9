"""Rows of ``idempotent_responses``: Idempotency-Key claims and stored responses.

The statements behind ``api.idempotency``, which owns the protocol (who runs, who waits,
what is refused). A row, keyed by (api_key_id, key, endpoint), is first a *claim*
(``claimed_until`` the claimer's lease, status and body null), then the stored response.
The lease end identifies a claim: a claim taken over has another one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection

# Claim (api_key_id, key, endpoint) for digest $4, or take over an expired claim of the
# same digest; else the row as this statement's snapshot sees it. No row at all: the
# claim conflicted with a row committed after the snapshot (ask again).
CLAIM = """
with claim as (
  insert into idempotent_responses as r (api_key_id, key, endpoint, request_hash, claimed_until)
  values ($1, $2, $3, $4, now() + $5::interval)
  on conflict (api_key_id, key, endpoint) do update set claimed_until = excluded.claimed_until
  where r.status is null and r.request_hash = excluded.request_hash and r.claimed_until < now()
  returning r.claimed_until
)
select true as claimed, claimed_until, null::bytea as request_hash, null::int as status,
       null::bytea as body
from claim
union all
select false, claimed_until, request_hash, status, body from idempotent_responses
where api_key_id = $1 and key = $2 and endpoint = $3 and not exists (select from claim)
"""

# The claim's lease end identifies it: a claim taken over has another one.
STORE = """
update idempotent_responses set status = $5, body = $6, claimed_until = null
where api_key_id = $1 and key = $2 and endpoint = $3 and claimed_until = $4
returning true
"""

STORED = """
select status, body from idempotent_responses
where api_key_id = $1 and key = $2 and endpoint = $3 and status is not null
"""

RELEASE = """
delete from idempotent_responses
where api_key_id = $1 and key = $2 and endpoint = $3 and claimed_until = $4
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """:func:`claim` claimed the key (or took an expired claim over) until ``lease_end``."""

    lease_end: datetime


@dataclass(frozen=True, slots=True)
class Held:
    """The key is another request's: its digest, and its (status, body) once stored."""

    request_hash: bytes
    response: tuple[int, bytes] | None


async def claim(
    db: AsyncEngine,
    api_key_id: uuid.UUID,
    key: str,
    endpoint: str,
    digest: bytes,
    lease: timedelta,
) -> Claimed | Held | None:
    """Claim the key for ``digest`` for ``lease`` (one round trip), else the row holding it;
    None when the claim conflicted with a row committed after the statement's snapshot."""
    async with driver_connection(db) as conn:
        row = await conn.fetchrow(CLAIM, api_key_id, key, endpoint, digest, lease)
    if row is None:
        return None
    if row["claimed"]:
        return Claimed(row["claimed_until"])
    # A stored response has both status and body (idempotent_responses_claim_or_response).
    response = None if row["status"] is None else (row["status"], bytes(row["body"]))
    return Held(bytes(row["request_hash"]), response)


async def store(
    db: AsyncEngine,
    api_key_id: uuid.UUID,
    key: str,
    endpoint: str,
    lease_end: datetime,
    status: int,
    body: bytes,
) -> tuple[int, bytes] | None:
    """Store the response of the claim whose lease ends at ``lease_end``.

    None when it is stored (or when the claim was taken over and the new claimer has not
    stored a response yet, or the row was pruned); else the (status, body) another
    claimer, who took the claim over, stored first.
    """
    async with driver_connection(db) as conn:
        if await conn.fetchval(STORE, api_key_id, key, endpoint, lease_end, status, body):
            return None
        row = await conn.fetchrow(STORED, api_key_id, key, endpoint)
    if row is None:
        return None
    return row["status"], bytes(row["body"])


async def release(
    db: AsyncEngine, api_key_id: uuid.UUID, key: str, endpoint: str, lease_end: datetime
) -> None:
    """Delete the claim whose lease ends at ``lease_end`` (if it is still that claim)."""
    async with driver_connection(db) as conn:
        await conn.execute(RELEASE, api_key_id, key, endpoint, lease_end)


__all__ = ["CLAIM", "RELEASE", "STORE", "STORED", "Claimed", "Held", "claim", "release", "store"]
