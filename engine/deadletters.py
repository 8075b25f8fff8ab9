"""Operator actions on dead letters: list, read, replay, discard.

Functions over the database or a :class:`~engine.runtime.Runtime`, shared by the HTTP
API (``/v1/dead-letters``) and the CLI (``conveyor deadletters``); the SQL is
:mod:`engine.store.dead_letters`.

**Replay** applies the stored message (as it is, or corrected) synchronously, the way the
worker would have: it is routed with the worker's :class:`~engine.messaging.routing.Router`
(from the message's original topic and key) and each delivery is applied as
``Runtime.start`` / ``Runtime.send`` would, judged by the worker's own verdicts
(:mod:`engine.messaging.delivery`). The event keeps its CloudEvent id unless a new one is
asked for. A payload that failed its schema never used up its id (see
:func:`engine.planning.claims_event_id`); an inbox row that says the event was *rejected*
is forgotten first, so the replay can apply; an event that was applied is never applied
again (the replay answers its outcome as ``duplicate``).

**One transaction.** The row lock, the deliveries and the dead letter's resolution (or
the note of a failed attempt) share one transaction on the connection that holds the lock
(``Runtime.start(conn=...)``, ``Applier.apply_locked``): a replay that dies on the way
leaves nothing applied and the dead letter pending, and a replay never asks the pool for
a second connection while it holds one. A new id (``new_id``) is derived from the dead
letter and the attempt's number (:func:`replay_event_id`), so a replay run again after a
lost answer uses the same id and cannot apply the event twice. An action that raises
keeps nothing of its attempt (a savepoint); it is tried again at once while its retry
policy's backoff is zero, then the instance waits as ``retrying`` for its retry timer (or
is ``failed`` after the last attempt) in the same transaction, as the worker would leave
it: the event took effect and the dead letter is ``replayed`` with that status. A start
or event that raises otherwise (a bug, say) is rolled back to its savepoint and answers
``processing_error``; a lost race (deadlock, a concurrent delivery of the same event id)
runs the whole replay again.

A replay succeeds when one of its deliveries takes effect (or already had): the dead
letter becomes ``replayed`` with the outcome in ``resolution``. Otherwise (still invalid,
still no instance, refused in the instance's state) :class:`ReplayFailed` (422) says why,
and the dead letter stays ``pending`` with the attempt noted in ``resolution.attempts``.

**Repeats.** An action on a dead letter that is no longer pending is a conflict
(:class:`DeadLetterResolved`, 409), except the very same request again: when its request id
is the one that resolved the dead letter, the answer is the dead letter as it is, and
nothing is applied twice. Actions on one dead letter are serialised by a row lock.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import retries
from engine.applier import retry_conflicts
from engine.errors import ConveyorError, InvalidRequest, InvalidState, NotFound
from engine.messaging.delivery import apply_start, outcome_verdict
from engine.messaging.routing import Routed, Router, StartCommand, Unroutable
from engine.model import Event, Outcome, StartResult
from engine.planning import Result
from engine.runtime import Runtime
from engine.store import dead_letters as store
from engine.store.database import driver_transaction
from engine.store.dead_letters import DeadLetterFilter, DeadLetterPage, DeadLetterRecord
from engine.transient import CONFLICT_ERRORS, is_transient
from engine.wire.cloudevents import (
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    InvalidMessage,
    decode,
    encode_structured,
)

MAX_ATTEMPTS_KEPT = 20

T = TypeVar("T")


class DeadLetterNotFound(NotFound):
    title = "Dead letter not found"


class DeadLetterResolved(InvalidState):
    """The dead letter was replayed or discarded already (by another request)."""

    title = "Dead letter already resolved"

    def __init__(self, letter: DeadLetterRecord) -> None:
        super().__init__(
            f"dead letter {letter.id} is {letter.status} already"
            + (f" (by request {letter.resolved_by})" if letter.resolved_by else "")
        )
        self.extensions: dict[str, Any] = {
            "dead_letter_id": letter.id,
            "dead_letter_status": letter.status,
            "resolution": letter.resolution,
        }


class ReplayFailed(ConveyorError):
    """The replayed message still cannot apply; the dead letter stays pending."""

    status_code = 422
    title = "Replay did not apply"

    def __init__(self, letter_id: int, reason: str, detail: str, event_id: str | None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.extensions: dict[str, Any] = {
            "dead_letter_id": letter_id,
            "reason": reason,
            "event_id": event_id,
        }


@dataclass(frozen=True, slots=True)
class Correction:
    """How to replay: as stored (the default), with a whole corrected CloudEvent
    (``value``, structured mode), or with the stored CloudEvent's ``data`` replaced; and
    with the same CloudEvent id (the default) or a new one."""

    value: Mapping[str, Any] | None = None
    data: Any = None
    new_id: bool = False

    def __post_init__(self) -> None:
        if self.value is not None and self.data is not None:
            raise InvalidRequest("give a corrected value or corrected data, not both")

    @property
    def corrected(self) -> bool:
        return self.value is not None or self.data is not None


# ------------------------------------------------------------------ reading


async def list_dead_letters(
    db: AsyncEngine, filters: DeadLetterFilter, *, limit: int = 50, cursor: int | None = None
) -> DeadLetterPage:
    """Dead letters matching ``filters``, newest first; ``cursor``: a previous
    ``next_cursor``."""
    return await store.list_page(db, filters, limit=limit, after=cursor)


async def get(db: AsyncEngine, letter_id: int) -> DeadLetterRecord:
    """One dead letter, everything stored about it."""
    letter = await store.get_one(db, letter_id)
    if letter is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id}")
    return letter


# ------------------------------------------------------------------ discard


async def discard(
    db: AsyncEngine, letter_id: int, *, reason: str = "", request_id: str | None = None
) -> DeadLetterRecord:
    """Mark a pending dead letter discarded: nothing is applied; ``reason`` is kept."""
    async with driver_transaction(db) as conn:
        letter = await store.lock(conn, letter_id)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {letter_id}")
        if _repeat(letter, "discarded", request_id):
            return letter
        if letter.status != "pending":
            raise DeadLetterResolved(letter)
        resolution = {"action": "discard", "reason": reason, **_attempts_of(letter)}
        return await store.resolve(conn, letter_id, "discarded", request_id, resolution)


# ------------------------------------------------------------------ replay


async def replay(
    runtime: Runtime,
    letter_id: int,
    *,
    correction: Correction | None = None,
    request_id: str | None = None,
) -> DeadLetterRecord:
    """Apply a pending dead letter's message now (see the module's docstring); the dead
    letter as resolved. Raises ReplayFailed (422) when it still cannot apply."""
    done = await retry_conflicts(
        partial(_replay_once, runtime, letter_id, correction or Correction(), request_id)
    )
    if isinstance(done, ReplayFailed):
        raise done  # raised once the attempt is committed (raising inside rolls it back)
    return done


async def _replay_once(
    runtime: Runtime, letter_id: int, correction: Correction, request_id: str | None
) -> DeadLetterRecord | ReplayFailed:
    """One transaction: lock the dead letter, apply its deliveries and resolve it (or note
    the failed attempt), all on the connection that holds the lock."""
    router = Router(runtime.registry, runtime.topics.prefix)
    async with driver_transaction(runtime.db) as conn:
        letter = await store.lock(conn, letter_id)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {letter_id}")
        if _repeat(letter, "replayed", request_id):
            return letter
        if letter.status != "pending":
            raise DeadLetterResolved(letter)
        attempt = _next_attempt(letter)
        event = _event_to_replay(letter, correction, attempt)
        routed = (
            event
            if isinstance(event, Unroutable)
            else router.route(letter.topic, letter.key, event)
        )
        event_id = None if isinstance(event, Unroutable) else event.id
        outcomes: list[dict[str, Any]] = []
        if isinstance(routed, Routed):
            outcomes = [await _apply(runtime, conn, d, request_id) for d in routed.deliveries]
        account: dict[str, Any] = {
            "action": "replay",
            "attempt": attempt,
            "event_id": event_id,
            "corrected": correction.corrected,
            "new_id": correction.new_id,
            "request_id": request_id,
            "at": runtime.clock().isoformat(),
            "outcomes": outcomes,
        }
        if correction.corrected and isinstance(event, CloudEvent):
            account["value"] = _structured(event)
        took_effect = [o for o in outcomes if o["took_effect"]]
        if took_effect:
            first = took_effect[0]
            resolution = {
                **account,
                "status": first["status"],
                "instance_id": first["instance_id"],
                "from_state": first["from_state"],
                "to_state": first["to_state"],
                **_attempts_of(letter),
            }
            return await store.resolve(conn, letter_id, "replayed", request_id, resolution)
        if isinstance(routed, Unroutable):
            reason, detail = routed.reason, routed.detail
        else:
            reason, detail = outcomes[0]["reason"], outcomes[0]["detail"]
        attempts = [*_attempts_of(letter)["attempts"], {**account, "reason": reason}]
        await store.note_attempt(
            conn, letter_id, {"attempts": attempts[-MAX_ATTEMPTS_KEPT:], "detail": detail}
        )
        return ReplayFailed(letter_id, reason, detail, event_id)


def _next_attempt(letter: DeadLetterRecord) -> int:
    """The number of this replay of ``letter``: one more than the last failed attempt on
    record (attempts are numbered; older records without a number count by position)."""
    attempts = _attempts_of(letter)["attempts"]
    if not attempts:
        return 1
    last = attempts[-1]
    number = last.get("attempt") if isinstance(last, dict) else None
    return (number if isinstance(number, int) else len(attempts)) + 1


def replay_event_id(letter_id: int, attempt: int) -> str:
    """The CloudEvent id a replay with ``new_id`` gives the event: derived from the dead
    letter and the attempt, so that a replay run again after a lost answer (its
    transaction rolled back, or committed unseen) reuses it and never applies the event a
    second time under another id."""
    return f"replay:{letter_id}:{attempt}"


def _event_to_replay(
    letter: DeadLetterRecord, correction: Correction, attempt: int
) -> CloudEvent | Unroutable:
    """The CloudEvent to replay: the stored one or the corrected one, with its id or a new
    one (:func:`replay_event_id`); or why there is none."""
    if correction.value is not None:
        raw = orjson.dumps(correction.value)
        try:
            event = decode(raw, [("content-type", STRUCTURED_CONTENT_TYPE.encode())])
        except InvalidMessage as exc:
            return Unroutable(exc.reason, f"the corrected value is not a CloudEvent: {exc}")
    else:
        try:
            event = decode(letter.value, letter.headers)
        except InvalidMessage as exc:
            return Unroutable(
                exc.reason,
                f"the stored message is not a CloudEvent ({exc}); replay it with a corrected "
                "value (a whole structured CloudEvent)",
            )
        if correction.data is not None:
            event = dataclasses.replace(event, data=correction.data)
    if correction.new_id:
        event = dataclasses.replace(event, id=replay_event_id(letter.id, attempt))
    return event


class _Undone(Exception):
    """Leaves a savepoint rolled back, carrying what the work inside it answered."""

    def __init__(self, result: Any) -> None:
        super().__init__("undone")
        self.result = result


async def _in_savepoint(
    conn: asyncpg.Connection, work: Callable[[], Awaitable[T]], keep: Callable[[T], bool]
) -> T:
    """``work`` in a savepoint, kept when ``keep`` says so, else rolled back (an error
    rolls it back too, and leaves the replay's transaction usable)."""
    try:
        async with conn.transaction():
            result = await work()
            if not keep(result):
                raise _Undone(result)
            return result
    except _Undone as undone:
        return cast(T, undone.result)


async def _apply(
    runtime: Runtime,
    conn: asyncpg.Connection,
    delivery: StartCommand | Event,
    request_id: str | None,
) -> dict[str, Any]:
    """Apply one delivery as the worker would (recorded as the operator's), in the
    replay's transaction; its account."""
    if isinstance(delivery, StartCommand):
        start = delivery
        started = await _in_savepoint(
            conn,
            lambda: apply_start(
                runtime, start, source="operator", request_id=request_id, conn=conn
            ),
            lambda result: not isinstance(result, Unroutable),
        )
        return _start_account(delivery, started)
    event = dataclasses.replace(delivery, source="operator", request_id=request_id)
    try:
        outcome: Outcome | Unroutable = await _send(runtime, conn, event)
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, CONFLICT_ERRORS):
            raise
        outcome = Unroutable("processing_error", f"{type(exc).__name__}: {exc}")
    return _event_account(event, outcome)


async def _send(runtime: Runtime, conn: asyncpg.Connection, event: Event) -> Outcome:
    """``Runtime.send`` in the replay's transaction. An event whose earlier delivery the
    state machine refused applies now (its inbox row is dropped if, and only if, it records
    a rejection). An action that raises leaves nothing of its attempt (a savepoint); it is
    tried again at once while its retry policy's backoff is zero, and then the instance
    waits as ``retrying`` (or is ``failed`` after the last attempt), as the worker would
    leave it (:func:`engine.retries.schedule_locked`), in this same transaction."""
    (instance_id,) = await runtime.applier.targets(conn, [event])
    if instance_id is not None:
        await store.forget_rejected(conn, instance_id, event.event_id)
    result = await _attempt(runtime, conn, event)
    if result.failure is None:
        return result.outcome
    failure, attempt = result.failure, 1
    while attempt < failure.retry.attempts and not failure.retry.backoff(attempt):
        attempt += 1
        result = await _attempt(runtime, conn, event)
        if result.failure is None:
            return result.outcome
        failure = result.failure
    return await retries.schedule_locked(runtime.applier, conn, event, failure, attempt)


async def _attempt(runtime: Runtime, conn: asyncpg.Connection, event: Event) -> Result:
    """One attempt at ``event``; nothing of it is kept when an action raised."""
    applier = runtime.applier

    async def once() -> Result:
        (result,) = await applier.apply_locked(conn, [event], True)
        return result

    return await _in_savepoint(conn, once, lambda result: result.failure is None)


def _start_account(start: StartCommand, started: StartResult | Unroutable) -> dict[str, Any]:
    if isinstance(started, Unroutable):
        return _account(
            start.workflow,
            start.idempotency_key,
            "dead",
            took_effect=False,
            reason=started.reason,
            detail=started.detail,
        )
    return _account(
        start.workflow,
        start.idempotency_key,
        "applied" if started.created else "duplicate",
        took_effect=True,
        instance_id=str(started.instance.id),
        to_state=started.instance.state,
    )


def _event_account(event: Event, outcome: Outcome | Unroutable) -> dict[str, Any]:
    if isinstance(outcome, Unroutable):
        return _account(
            event.workflow,
            event.event_id,
            "dead",
            took_effect=False,
            reason=outcome.reason,
            detail=outcome.detail,
        )
    workflow = outcome.instance.workflow if outcome.instance is not None else event.workflow
    dead = outcome_verdict(outcome)
    rejection = outcome.rejection
    reason: str | None = None
    detail: str | None = None
    if dead is not None:
        reason, detail = dead.reason, dead.detail
    elif outcome.status == "rejected" and rejection is not None:
        # Not a dead letter to the worker (the history keeps it), but not applied either.
        reason, detail = rejection.reason, rejection.message
    return _account(
        workflow,
        event.event_id,
        outcome.status,
        took_effect=reason is None,
        reason=reason,
        detail=detail or outcome.error,
        instance_id=str(outcome.instance_id) if outcome.instance_id else None,
        from_state=outcome.from_state,
        to_state=outcome.to_state,
    )


def _account(
    workflow: str | None,
    event_id: str,
    status: str,
    *,
    took_effect: bool,
    reason: str | None = None,
    detail: str | None = None,
    instance_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
) -> dict[str, Any]:
    """What one delivery of a replay did (kept in the dead letter's ``resolution``)."""
    return {
        "workflow": workflow,
        "event_id": event_id,
        "status": status,
        "took_effect": took_effect,
        "reason": reason,
        "detail": detail,
        "instance_id": instance_id,
        "from_state": from_state,
        "to_state": to_state,
    }


# ------------------------------------------------------------------ helpers


def _repeat(letter: DeadLetterRecord, status: str, request_id: str | None) -> bool:
    """The same request again (its id resolved this dead letter the same way)."""
    return request_id is not None and letter.status == status and letter.resolved_by == request_id


def _attempts_of(letter: DeadLetterRecord) -> dict[str, list[Any]]:
    """Earlier failed replays, kept in ``resolution.attempts``."""
    attempts = (letter.resolution or {}).get("attempts")
    return {"attempts": list(attempts) if isinstance(attempts, list) else []}


def _structured(event: CloudEvent) -> Any:
    return orjson.loads(encode_structured(event)[0])


# ------------------------------------------------------------------ presenting


def bytes_json(raw: bytes | None) -> tuple[str | None, str | None]:
    """Bytes for a JSON answer: (text, "utf-8") when they are UTF-8, else (base64,
    "base64"); (None, None) for none."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def summary_json(letter: DeadLetterRecord) -> dict[str, Any]:
    """A dead letter in a list: where it came from, why, what about, and its status."""
    return {
        "id": letter.id,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "detail": letter.detail,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "workflow": letter.workflow,
        "business_key": letter.business_key,
        "instance_id": str(letter.instance_id) if letter.instance_id else None,
        "first_seen_at": letter.first_seen_at.isoformat(),
        "last_seen_at": letter.last_seen_at.isoformat(),
        "seen_count": letter.seen_count,
        "status": letter.status,
        "resolved_at": letter.resolved_at.isoformat() if letter.resolved_at else None,
    }


def detail_json(letter: DeadLetterRecord) -> dict[str, Any]:
    """Everything about a dead letter: the summary, the message (key, headers, value) and
    what happened to it (who resolved it, and how)."""
    key, key_encoding = bytes_json(letter.key)
    value, value_encoding = bytes_json(letter.value)
    return {
        **summary_json(letter),
        "key": key,
        "key_encoding": key_encoding,
        "headers": store.headers_to_json(letter.headers),
        "value": value,
        "value_encoding": value_encoding,
        "resolved_by": letter.resolved_by,
        "resolution": letter.resolution,
    }


def page_json(page: DeadLetterPage) -> dict[str, Any]:
    return {"items": [summary_json(i) for i in page.items], "next_cursor": page.next_cursor}


__all__ = [
    "Correction",
    "DeadLetterFilter",
    "DeadLetterNotFound",
    "DeadLetterResolved",
    "ReplayFailed",
    "detail_json",
    "discard",
    "get",
    "list_dead_letters",
    "page_json",
    "replay",
    "replay_event_id",
    "summary_json",
]
