"""API keys: creating, verifying and revoking them.

A key looks like ``cvk_<prefix>_<secret>``: ``prefix`` (8 hex characters) names the key in
listings and logs; ``secret`` is 32 random bytes. Only the SHA-256 of the whole key is
stored: the key is random and long, so a slow password hash would add nothing.

Scopes nest: ``admin`` includes ``write``, which includes ``read``.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import ConveyorError, InvalidRequest
from engine.store import api_keys as rows

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEY_PREFIX = "cvk"
_RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3}


class Unauthenticated(ConveyorError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    title = "Unauthenticated"
    headers = {"WWW-Authenticate": 'Bearer realm="conveyor"'}


class Forbidden(ConveyorError):
    """A valid API key without the scope the operation needs."""

    status_code = 403
    title = "Forbidden"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: uuid.UUID
    name: str
    prefix: str
    scopes: tuple[Scope, ...]

    def allows(self, needed: Scope) -> bool:
        """Whether one of the key's scopes includes ``needed`` (admin > write > read)."""
        return any(_RANK[scope] >= _RANK[needed] for scope in self.scopes)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``secret`` is the whole key, shown once and never stored."""

    key: ApiKey
    secret: str


def hash_key(secret: str) -> bytes:
    # surrogatepass: a header that was not UTF-8 arrives with lone surrogates; hashing it
    # must not raise (it matches no key: stored keys are ASCII, encoded alike either way).
    return hashlib.sha256(secret.encode(errors="surrogatepass")).digest()


def parse_scopes(value: str | Iterable[str]) -> tuple[Scope, ...]:
    """``"read,write"`` (or a list) to scopes; unknown scopes raise InvalidRequest."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    scopes: list[Scope] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if part not in SCOPES:
            raise InvalidRequest(f"unknown scope {part!r}; scopes are {', '.join(SCOPES)}")
        scope: Scope = part
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise InvalidRequest(f"give at least one scope of {', '.join(SCOPES)}")
    return tuple(scopes)


def looks_like_key(secret: str) -> bool:
    """A cheap shape check, so that garbage never reaches the database."""
    parts = secret.split("_", 2)  # the secret part may contain "_" itself
    return (
        len(parts) == 3
        and parts[0] == KEY_PREFIX
        and len(parts[1]) == 8
        and 20 <= len(parts[2]) <= 100
        and len(secret) <= 128
    )


async def create_api_key(db: AsyncEngine, name: str, scopes: str | Iterable[str]) -> CreatedKey:
    """Create and store a key; the returned ``secret`` is the only copy of it."""
    if not name.strip():
        raise InvalidRequest("an API key needs a name")
    parsed = parse_scopes(scopes)
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key_id = uuid.uuid4()
    await rows.insert(db, key_id, name.strip(), prefix, hash_key(secret), parsed)
    return CreatedKey(ApiKey(key_id, name.strip(), prefix, parsed), secret)


async def verify_api_key(db: AsyncEngine, secret: str) -> ApiKey | None:
    """The live (not revoked) key whose hash matches ``secret``, else None."""
    if not looks_like_key(secret):
        return None
    row = await rows.live_by_hash(db, hash_key(secret))
    if row is None:
        return None
    scopes = tuple(s for s in SCOPES if s in row["scopes"])
    return ApiKey(row["id"], row["name"], row["prefix"], scopes)


@dataclass(frozen=True, slots=True)
class KeyListing:
    key: ApiKey
    created_at: datetime
    revoked_at: datetime | None


async def list_api_keys(db: AsyncEngine) -> list[KeyListing]:
    """Every key, live and revoked, oldest first (never a secret: they are not stored)."""
    return [
        KeyListing(
            ApiKey(r["id"], r["name"], r["prefix"], tuple(s for s in SCOPES if s in r["scopes"])),
            r["created_at"],
            r["revoked_at"],
        )
        for r in await rows.all_keys(db)
    ]


async def revoke_api_key(db: AsyncEngine, prefix: str) -> bool:
    """Revoke the key with ``prefix``; False when there is no live key with it."""
    return await rows.revoke(db, prefix)


__all__ = [
    "SCOPES",
    "ApiKey",
    "CreatedKey",
    "Forbidden",
    "KeyListing",
    "Scope",
    "Unauthenticated",
    "create_api_key",
    "hash_key",
    "parse_scopes",
    "revoke_api_key",
    "verify_api_key",
]
