"""Logged tracebacks never show local variables (instance data) outside DEBUG."""

from __future__ import annotations

import io
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

import orjson
import pytest
import structlog

from engine import observability
from engine.observability import configure_logging
from engine.settings import Settings

Format = Literal["console", "json"]
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


@pytest.fixture
def log_to_string(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Settings], io.StringIO]]:
    """Configure logging for ``settings`` into a string; restore the process's logging after."""
    saved_structlog = structlog.get_config()
    manager = logging.Logger.manager
    saved_loggers = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name, logger in [("", logging.getLogger())]
        + [(n, lg) for n, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)]
    }
    monkeypatch.setattr(observability, "_configured", observability._configured)

    def configure(settings: Settings) -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)  # not a tty: no colours
        configure_logging(settings, force=True)
        return stream

    yield configure
    structlog.configure(**saved_structlog)
    for name, (handlers, level, propagate) in saved_loggers.items():
        logger = logging.getLogger(name or None)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def charge(card_token: str) -> None:
    payment_reference = card_token.upper()  # a local holding instance data
    raise RuntimeError(f"card declined ({len(payment_reference)} characters)")


def log_a_failure(via: str, secret: str) -> None:
    try:
        charge(secret)
    except RuntimeError:
        if via == "structlog":
            structlog.stdlib.get_logger("conveyor.test").exception("charge failed")
        else:  # a library logging through the standard library (Sanic, aiokafka)
            logging.getLogger("sanic.error").exception("charge failed")


def secrets_in(output: str, secret: str) -> list[str]:
    return [value for value in (secret, secret.upper()) if value in output]


@pytest.mark.parametrize("via", ["structlog", "stdlib"])
@pytest.mark.parametrize("log_format", ["console", "json"])
@pytest.mark.parametrize("level", ["INFO", "WARNING", "ERROR"])
def test_tracebacks_show_no_locals_outside_debug(
    log_to_string: Callable[[Settings], io.StringIO], via: str, log_format: Format, level: Level
) -> None:
    secret = f"s3cr3t{uuid.uuid4().hex[:10]}"
    output = log_to_string(Settings(log_format=log_format, log_level=level))
    log_a_failure(via, secret)
    text = output.getvalue()
    assert "card declined" in text, text  # the traceback is there ...
    assert "charge" in text, text
    assert secrets_in(text, secret) == [], text  # ... without the locals' values
    if log_format == "json":
        (line,) = [orjson.loads(row) for row in text.splitlines() if row.strip()]
        frames = line["exception"][0]["frames"]
        assert [f["name"] for f in frames][-1] == "charge"
        assert all("locals" not in frame for frame in frames)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_debug_tracebacks_show_locals(
    log_to_string: Callable[[Settings], io.StringIO], log_format: Format
) -> None:
    secret = f"s3cr3t{uuid.uuid4().hex[:10]}"
    output = log_to_string(Settings(log_format=log_format, log_level="DEBUG"))
    log_a_failure("structlog", secret)
    text = output.getvalue()
    assert secrets_in(text, secret) == [secret, secret.upper()], text
    if log_format == "json":
        line: dict[str, Any] = orjson.loads(text.strip())
        frame = line["exception"][0]["frames"][-1]
        assert frame["locals"]["card_token"] == repr(secret)
