"""Which failures mean "a dependency is away or busy, try again" and which mean "this
database connection is dead, throw it away".

Both questions are asked at the edges: the worker's services retry a batch or a round on a
transient error (and dead-letter nothing for it); the pool drops a connection that died
(PostgreSQL restarted, ``pg_terminate_backend``, a network cut) instead of lending it out
again; the HTTP API answers 503 instead of 500.
"""

from __future__ import annotations

import asyncpg
import sqlalchemy.exc
from aiokafka.errors import KafkaError

from engine.errors import ConveyorError, DependencyUnavailable

# The connection itself is gone or unusable: what it was doing is lost, and it must not
# go back into the pool. (OperatorInterventionError: admin or crash shutdown, "cannot
# connect now" while the server starts; QueryCanceledError is one too, but the
# connection survives a cancelled query.)
DISCONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError and its kin: refused, reset, broken pipe
    TimeoutError,  # a connection that stopped answering
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed", "connection was closed in the middle"
    # The protocol's state is broken (seen when the server kills a pooled session).
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)

# A transaction lost a race: running it again is the fix.
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    # Two transactions recorded the same event id at once; the retry sees it as a duplicate.
    asyncpg.exceptions.UniqueViolationError,
)

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *DISCONNECT_ERRORS,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection within pool_timeout
    sqlalchemy.exc.DisconnectionError,
)

# SQLSTATE classes that say "the server cannot serve us now", whatever we asked: 08
# connection exception, 28 invalid authorization (a password being rotated), 3D no such
# database (yet), 40 transaction rollback, 53 insufficient resources (too many
# connections, disk full), 57 operator intervention (shutting down, starting up,
# cancelled), 58 system error (I/O). Never a property of one event.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "40", "53", "57", "58"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, what SQLAlchemy wrapped (``orig``), and their causes (bounded)."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(found) < 8:
        current = pending.pop(0)
        if current is None or any(current is f for f in found):
            continue
        found.append(current)
        if isinstance(current, KafkaError):
            continue  # its cause (a timeout, a socket error) is Kafka's, not the database's
        if isinstance(current, sqlalchemy.exc.DBAPIError):
            pending.append(current.orig)
        pending.append(current.__cause__)
    return found


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else ""


# A statement that ran into statement_timeout (or was cancelled) is about what it was
# asked to do: a poison event must be found and dead-lettered, not retried forever.
QUERY_CANCELED = "57014"


def is_disconnect(exc: BaseException) -> bool:
    """The database connection that raised ``exc`` is dead: drop it, don't reuse it."""
    if isinstance(exc, KafkaError):
        return False
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return any(isinstance(e, DISCONNECT_ERRORS) for e in _chain(exc))


def is_database_unavailable(exc: BaseException) -> bool:
    """PostgreSQL cannot be reached or cannot serve us right now (worth a 503 or a retry),
    however the error reached us: from asyncpg directly or wrapped by SQLAlchemy."""
    if isinstance(exc, KafkaError):
        return False
    for error in _chain(exc):
        if isinstance(error, _UNAVAILABLE):
            return True
        state = _sqlstate(error)
        if state[:2] in UNAVAILABLE_SQLSTATE_CLASSES and state != QUERY_CANCELED:
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying the whole batch for: a dependency was away or busy, or a
    transaction lost a race. Anything else is a property of the message (or a bug)."""
    if isinstance(exc, ConveyorError):
        # Of our own errors only an unavailable dependency: ActionFailed is retried by its
        # transition's RetryPolicy, which the runtime has already applied.
        return isinstance(exc, DependencyUnavailable)
    if isinstance(exc, KafkaError) or is_database_unavailable(exc):
        return True
    return any(isinstance(e, CONFLICT_ERRORS) for e in _chain(exc))


__all__ = [
    "CONFLICT_ERRORS",
    "DISCONNECT_ERRORS",
    "is_database_unavailable",
    "is_disconnect",
    "is_transient",
]
