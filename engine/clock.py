"""Time as the shell reads it: a clock is a function, injected so that tests skip time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The production clock: now, in UTC."""
    return datetime.now(UTC)


__all__ = ["Clock", "utc_now"]
