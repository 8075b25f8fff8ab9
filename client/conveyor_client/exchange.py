"""What both clients do around the wire: turn a :class:`~conveyor_client.calls.Call` into
httpx request arguments, and an httpx response into the call's result or a typed error.
Pure (no I/O)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from conveyor_client import errors
from conveyor_client.calls import Answer, Call
from conveyor_client.retrying import RetryPolicy

T = TypeVar("T")
USER_AGENT = "conveyor-client/0.1"
log = logging.getLogger("conveyor_client")


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How a client talks to one API: where, with which key, how patiently."""

    base_url: str
    api_key: str | None = field(repr=False)
    """Sent as ``Authorization: Bearer <key>``; never shown in a repr or a log line."""
    timeout: float = 10.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return (
            f"ClientSettings(base_url={self.base_url!r}, api_key=<{key}>, timeout={self.timeout})"
        )


def request_args(settings: ClientSettings, call: Call[Any]) -> dict[str, Any]:
    """Keyword arguments of ``httpx.(Async)Client.request`` for ``call``."""
    headers: dict[str, str | bytes] = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    # UTF-8 (an Idempotency-Key may be any text; httpx would take ASCII only).
    headers.update((name, value.encode()) for name, value in call.headers.items())
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    args: dict[str, Any] = {
        "method": call.method,
        "url": f"{settings.base_url.rstrip('/')}{call.path}",
        "headers": headers,
        "timeout": settings.timeout,
    }
    if call.params:
        args["params"] = list(call.params)
    if call.json is not None:
        args["json"] = call.json
    elif call.method == "POST":
        args["json"] = {}
    return args


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def read_answer(call: Call[T], response: httpx.Response) -> T:
    """The call's result from ``response``; the typed error of an error answer."""
    if response.status_code not in call.ok:
        raise errors.from_response(
            response.status_code, response.content, dict(response.headers.items())
        )
    body: Any
    if call.text:
        body = response.text
    elif response.content:
        try:
            body = json.loads(response.content)
        except ValueError as error:
            raise errors.ServerError(
                response.status_code,
                title="Invalid answer",
                detail=f"the answer is not JSON: {error}",
                request_id=response.headers.get(errors.REQUEST_ID_HEADER),
            ) from error
    else:
        body = None
    return call.parse(Answer(response.status_code, response.headers, body))


def log_retry(call: Call[Any], attempt: int, wait: float, cause: str) -> None:
    """A debug line per retry: the method, path and cause; never a header (the key)."""
    log.debug(
        "retrying %s %s in %.2f s (attempt %d failed: %s)",
        call.method,
        call.path,
        wait,
        attempt + 1,
        cause,
    )


def gave_up(call: Call[Any], attempts: int, error: httpx.TransportError) -> errors.TransportError:
    """The error raised when no attempt got an answer."""
    what = type(error).__name__
    return errors.TransportError(
        f"{call.method} {call.path}: no answer after {attempts} attempt(s) ({what}: {error})",
        attempts=attempts,
    )


__all__ = ["ClientSettings", "gave_up", "log_retry", "read_answer", "request_args", "retry_after"]
