"""Driving the console over HTTP in tests: sign in with an API key (the session cookie
stays in the client's jar) and read a page's CSRF token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def sign_in(base: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to the console at ``base``."""
    async with httpx.AsyncClient(base_url=base, timeout=30, headers={"Origin": base}) as client:
        response = await client.post("/ui/login", data={"api_key": api_key, "next": "/ui/overview"})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/ui/overview"
        yield client


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)
