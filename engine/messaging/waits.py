"""Waiting for the first of several things, with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any


async def first_of(
    waits: Sequence[Coroutine[Any, Any, Any]],
    *,
    timeout: float,
    also: asyncio.Future[Any] | None = None,
) -> None:
    """Wait until one of ``waits`` (or the ``also`` future) is done, or ``timeout``."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(
            [*tasks, *([also] if also is not None else [])],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for task in tasks:
            task.cancel()


__all__ = ["first_of"]
