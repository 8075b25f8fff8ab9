"""Signing in to the console with an API key, and the session that follows.

The session cookie holds a random 256-bit token; only its SHA-256 is stored, with the key
the operator signed in with, a CSRF token and an expiry (``console_sessions``). The cookie
is ``HttpOnly``, ``SameSite=Strict``, limited to ``/ui`` and ``Secure`` when the console is
served over HTTPS. A session ends when it expires, on sign-out, or at once when its API
key is revoked. The API key itself is never kept in the browser, a URL or a log.

Every form that changes something carries the session's CSRF token (checked in constant
time), and a state-changing request must come from the console's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sanic import HTTPResponse, Request

from engine.auth import SCOPES, ApiKey, Scope, verify_api_key
from engine.store import console_sessions as rows

COOKIE = "conveyor_console"
COOKIE_PATH = "/ui"
SESSION_TTL = timedelta(hours=8)
"""How long a sign-in lasts."""


@dataclass(frozen=True, slots=True)
class Session:
    key: ApiKey
    csrf_token: str
    expires_at: datetime

    def allows(self, scope: Scope) -> bool:
        return self.key.allows(scope)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def sign_in(request: Request, secret: str, now: datetime) -> tuple[Session, str] | None:
    """A new session for the API key ``secret`` and its cookie token; None for a key that
    is unknown or revoked."""
    key = await verify_api_key(request.app.ctx.db, secret.strip())
    if key is None:
        return None
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + SESSION_TTL
    await rows.create(request.app.ctx.db, _hash(token), key.id, csrf, expires, now)
    return Session(key, csrf, expires), token


async def current(request: Request, now: datetime) -> Session | None:
    """The request's live session, if its cookie names one."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 200 or not token.isascii():
        return None
    row = await rows.live(request.app.ctx.db, _hash(token), now)
    if row is None:
        return None
    scopes = tuple(s for s in SCOPES if s in row["scopes"])
    key = ApiKey(row["id"], row["name"], row["prefix"], scopes)
    return Session(key, row["csrf_token"], row["expires_at"])


async def sign_out(request: Request) -> None:
    token = request.cookies.get(COOKIE)
    if token and len(token) <= 200 and token.isascii():
        await rows.delete(request.app.ctx.db, _hash(token))


def set_cookie(request: Request, response: HTTPResponse, token: str, expires: datetime) -> None:
    response.add_cookie(
        COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
        expires=expires,
    )


def clear_cookie(request: Request, response: HTTPResponse) -> None:
    response.add_cookie(
        COOKIE,
        "",
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
        max_age=0,
    )


def csrf_ok(request: Request, session: Session, presented: str | None) -> bool:
    """A state-changing request is the console's own: the form's CSRF token matches the
    session's, and the browser's Origin (when it sends one) is this host."""
    if not presented or not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
        return False
    return same_origin(request)


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


__all__ = [
    "COOKIE",
    "SESSION_TTL",
    "Session",
    "clear_cookie",
    "csrf_ok",
    "current",
    "same_origin",
    "set_cookie",
    "sign_in",
    "sign_out",
]
