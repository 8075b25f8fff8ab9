"""A client that leaves mid-request is no server error."""

from __future__ import annotations

from typing import Any

import orjson
from sanic.exceptions import RequestCancelled
from structlog.testing import capture_logs

from api.problems import CLIENT_CLOSED, ProblemErrorHandler


def test_a_cancelled_request_is_logged_quietly_not_as_an_unhandled_error() -> None:
    handler = ProblemErrorHandler()
    request: Any = None  # the handler copes without one
    with capture_logs() as logs:
        response = handler.default(request, RequestCancelled())
    assert response.status == CLIENT_CLOSED
    assert response.body is not None
    assert orjson.loads(response.body)["title"] == "Client Closed Request"
    assert [entry["log_level"] for entry in logs] == ["info"]
    assert "unhandled" not in logs[0]["event"]


def test_an_unexpected_error_is_still_an_error_with_a_bare_500() -> None:
    handler = ProblemErrorHandler()
    request: Any = None
    with capture_logs() as logs:
        response = handler.default(request, RuntimeError("secret internals"))
    assert response.status == 500
    assert response.body is not None
    assert b"secret internals" not in response.body
    assert [entry["log_level"] for entry in logs] == ["error"]
