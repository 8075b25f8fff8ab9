"""Logging (structlog) and error reporting (sentry-sdk), configured once per process."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
import structlog.tracebacks

from engine.settings import Settings

_configured = False

# What a request (or a consumed message) is about: its id, key, workflow, instance. One
# dict per request, set once and then filled in place: cheaper on the hot path than a
# context variable per key (``structlog.contextvars``), and merged into every log line
# logged under it by ``merge_log_context``.
_log_context: ContextVar[dict[str, Any] | None] = ContextVar("conveyor_log_context", default=None)


def begin_log_context(**values: Any) -> None:
    """Start a fresh log context (a new request) with ``values``."""
    _log_context.set(values)


def bind_log_context(**values: Any) -> None:
    """Add ``values`` to the current log context (starting one if there is none)."""
    context = _log_context.get()
    if context is None:
        _log_context.set(values)
    else:
        context.update(values)


def merge_log_context(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current log context's values, under the event's own."""
    context = _log_context.get()
    if context:
        for key, value in context.items():
            event_dict.setdefault(key, value)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def _console_tracebacks(*, show_locals: bool, colors: bool) -> structlog.typing.ExceptionRenderer:
    """The console's traceback formatter: structlog's default (rich or better-exceptions,
    both of which print every frame's local variables) only when ``show_locals``; else rich
    without locals when it is installed, else the standard library's plain traceback."""
    if show_locals:
        return structlog.dev.default_exception_formatter  # monochrome unless ``colors``
    if importlib.util.find_spec("rich") is None:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(
        show_locals=False, color_system="truecolor" if colors else None
    )


def configure_logging(settings: Settings, *, force: bool = False) -> None:
    """Configure structlog and route the standard library's loggers through it.

    ``console`` renders readable lines for development; ``json`` writes one JSON object
    per line for production. Context bound with :func:`bind_log_context` (request id,
    workflow, instance) or ``structlog.contextvars`` appears on every line logged while it
    is bound.
    """
    global _configured
    if _configured and not force:
        return
    level = logging.getLevelNamesMapping()[settings.log_level]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_log_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # Tracebacks show local variables (instance data, payloads, credentials) at DEBUG only.
    show_locals = level <= logging.DEBUG
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=show_locals)
            )
        )
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        colors = sys.stderr.isatty()
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors,
            exception_formatter=_console_tracebacks(show_locals=show_locals, colors=colors),
        )

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries stay at WARNING unless we debug.
    for name in ("aiokafka", "sqlalchemy.engine", "asyncio", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for name in ("sanic.root", "sanic.error", "sanic.access", "sanic.server"):
        lib_logger = logging.getLogger(name)
        lib_logger.handlers[:] = []
        lib_logger.propagate = True
    _configured = True


def configure_sentry(settings: Settings, *, component: str) -> bool:
    """Initialise sentry-sdk when a DSN is set; return whether it is on."""
    if not settings.sentry_dsn:
        return False
    # Loaded only with a DSN: sentry-sdk costs ~0.2 s to import and its integrations import
    # sanic and sqlalchemy, which a worker or the CLI may not otherwise load.
    import sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_sdk.integrations.sanic import SanicIntegration
    from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        integrations=[SanicIntegration(), AsyncioIntegration(), SqlalchemyIntegration()],
        send_default_pii=False,
        # Frames' local variables hold instance data and payloads: never send them.
        include_local_variables=False,
    )
    sentry_sdk.set_tag("component", component)
    return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
