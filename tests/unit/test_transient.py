"""Which failures the worker retries (and the API answers 503 for) rather than blaming
the message: a database that is away must never dead-letter an event."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError

from engine.decide import ActionFailed
from engine.dsl import RetryPolicy
from engine.errors import DependencyUnavailable, InstanceNotFound, PayloadInvalid
from engine.transient import is_database_unavailable, is_disconnect, is_transient


def wrapped(error: BaseException) -> sqlalchemy.exc.DBAPIError:
    """As SQLAlchemy's asyncpg dialect raises it: an adapted error caused by asyncpg's,
    inside a DBAPIError."""

    class AdaptedError(Exception):
        pass

    adapted = AdaptedError(str(error))
    adapted.__cause__ = error
    return sqlalchemy.exc.DBAPIError("select 1", None, adapted)


SHUTTING_DOWN = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        SHUTTING_DOWN,
        wrapped(SHUTTING_DOWN),
        wrapped(ConnectionRefusedError(111, "Connection refused")),
        wrapped(asyncpg.exceptions.TooManyConnectionsError("too many clients")),
        wrapped(asyncpg.exceptions.InvalidPasswordError("password authentication failed")),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    ],
    ids=repr,
)
def test_a_database_that_is_away_is_transient_however_wrapped(error: BaseException) -> None:
    assert is_database_unavailable(error)
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
        wrapped(SHUTTING_DOWN),
    ],
    ids=repr,
)
def test_a_dead_connection_is_recognised_for_invalidation(error: BaseException) -> None:
    assert is_disconnect(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        wrapped(asyncpg.exceptions.SerializationError("could not serialize")),
        KafkaConnectionError(),
        DependencyUnavailable("kafka: down"),
    ],
    ids=repr,
)
def test_races_and_kafka_outages_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        KeyError("state"),
        PayloadInvalid("bad payload"),
        InstanceNotFound("no instance"),
        asyncpg.exceptions.DataError("invalid input syntax"),
        wrapped(asyncpg.exceptions.NotNullViolationError("null value")),
    ],
    ids=repr,
)
def test_errors_of_the_message_or_the_code_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)
    assert not is_database_unavailable(error)
    assert not is_disconnect(error)


def test_a_kafka_error_caused_by_a_socket_error_is_not_a_database_outage() -> None:
    """The relay sends to Kafka inside a database transaction: a broker timeout must not
    drop the connection or count towards the database outage."""
    for kafka_error, cause in (
        (KafkaConnectionError(), OSError("connection reset")),
        (RequestTimedOutError(), TimeoutError()),
    ):
        kafka_error.__cause__ = cause
        assert is_transient(kafka_error)
        assert not is_database_unavailable(kafka_error)
        assert not is_disconnect(kafka_error)


def test_a_statement_timeout_is_the_statement_s_problem_not_an_outage() -> None:
    timeout = asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
    assert not is_database_unavailable(timeout)
    assert not is_database_unavailable(wrapped(timeout))


def test_a_failed_action_is_never_retried_as_a_batch() -> None:
    """Its transition's RetryPolicy governs it, in the runtime: even an action that failed
    because its own call to a service timed out is not the worker's to retry."""
    failure = ActionFailed("order v1", "pay", "placed", RetryPolicy(), TimeoutError())
    failure.__cause__ = failure.error
    assert not is_transient(failure)
