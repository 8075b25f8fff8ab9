"""When to send a call again, and after how long: pure decisions both clients follow.

A call is sent again only after a connection failure or a 503 answer, at most
``retries`` times, after an exponential backoff with jitter (at least the answer's
``Retry-After``, at most ``max_backoff``). A failure to *connect* is always safe to
retry (the request never reached the server); any other lost answer or a 503 only for a
call marked ``retry_safe`` (see :mod:`conveyor_client.calls`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RETRIABLE_STATUS = 503


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts after the first; delays ``backoff * 2**n`` seconds
    (n = 0, 1, ...), capped at ``max_backoff``, of which a random part (``jitter``, 0..1)
    is taken off so that many clients do not come back at once."""

    retries: int = 4
    backoff: float = 0.2
    max_backoff: float = 5.0
    jitter: float = 0.5
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        base = min(self.backoff * float(2**attempt), self.max_backoff)
        wait = base * (1 - self.jitter * self.rng())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait


def connection_failed(error: httpx.TransportError) -> bool:
    """Whether ``error`` happened before the request reached the server (so that even a
    call that is not idempotent may be sent again)."""
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def retry_after_error(
    policy: RetryPolicy, attempt: int, error: httpx.TransportError, retry_safe: bool
) -> float | None:
    """The delay before sending again after ``error`` on attempt ``attempt``, or None to
    give up."""
    if attempt >= policy.retries:
        return None
    if not (retry_safe or connection_failed(error)):
        return None
    return policy.delay(attempt)


def retry_after_status(
    policy: RetryPolicy,
    attempt: int,
    status: int,
    retry_safe: bool,
    retry_after: float | None,
) -> float | None:
    """The delay before sending again after an answer with ``status``, or None."""
    if status != RETRIABLE_STATUS or not retry_safe or attempt >= policy.retries:
        return None
    return policy.delay(attempt, retry_after)


__all__ = ["RetryPolicy", "connection_failed", "retry_after_error", "retry_after_status"]
