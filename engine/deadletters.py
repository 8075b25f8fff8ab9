"""Operator actions on dead letters: list, read, replay, discard.

Functions over the database or a :class:`~engine.runtime.Runtime`, shared by the HTTP
API (``/v1/dead-letters``) and the CLI (``conveyor deadletters``); the SQL is
:mod:`engine.store.dead_letters`.

**Replay** applies the stored message (as it is, or corrected) synchronously, the way the
worker would have: it is routed with the worker's :class:`~engine.messaging.routing.Router`
(from the message's original topic and key) and each delivery goes through
``Runtime.start`` / ``Runtime.send``, judged by the worker's own verdicts
(:mod:`engine.messaging.delivery`). The event keeps its CloudEvent id unless a new one is
asked for. A payload that failed its schema never used up its id (see
:func:`engine.planning.claims_event_id`); an inbox row that says the event was *rejected*
is forgotten first, so the replay can apply; an event that was applied is never applied
again (the replay answers its outcome as ``duplicate``).

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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import ConveyorError, InstanceNotFound, InvalidRequest, InvalidState, NotFound
from engine.messaging.delivery import apply_start, outcome_verdict
from engine.messaging.routing import Routed, Router, StartCommand, Unroutable
from engine.model import Event, Outcome, StartResult
from engine.runtime import Runtime
from engine.store import dead_letters as store
from engine.store.database import driver_transaction
from engine.store.dead_letters import DeadLetterFilter, DeadLetterPage, DeadLetterRecord
from engine.transient import is_transient
from engine.wire.cloudevents import (
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    InvalidMessage,
    decode,
    encode_structured,
)

MAX_ATTEMPTS_KEPT = 20


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
    correction = correction or Correction()
    router = Router(runtime.registry, runtime.topics.prefix)
    failure: ReplayFailed | None = None
    async with driver_transaction(runtime.db) as conn:
        letter = await store.lock(conn, letter_id)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {letter_id}")
        if _repeat(letter, "replayed", request_id):
            return letter
        if letter.status != "pending":
            raise DeadLetterResolved(letter)
        event = _event_to_replay(letter, correction)
        routed = (
            event
            if isinstance(event, Unroutable)
            else router.route(letter.topic, letter.key, event)
        )
        event_id = None if isinstance(event, Unroutable) else event.id
        outcomes: list[dict[str, Any]] = []
        if isinstance(routed, Routed):
            outcomes = [await _apply(runtime, d, request_id) for d in routed.deliveries]
        account: dict[str, Any] = {
            "action": "replay",
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
        failure = ReplayFailed(letter_id, reason, detail, event_id)
    # Raised once the attempt is committed (raising inside would roll it back).
    raise failure


def _event_to_replay(letter: DeadLetterRecord, correction: Correction) -> CloudEvent | Unroutable:
    """The CloudEvent to replay: the stored one or the corrected one, with its id or a new
    one; or why there is none."""
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
        event = dataclasses.replace(event, id=str(uuid.uuid4()))
    return event


async def _apply(
    runtime: Runtime, delivery: StartCommand | Event, request_id: str | None
) -> dict[str, Any]:
    """Apply one delivery as the worker would (recorded as the operator's); its account."""
    if isinstance(delivery, StartCommand):
        started = await apply_start(runtime, delivery, source="operator", request_id=request_id)
        return _start_account(delivery, started)
    event = dataclasses.replace(delivery, source="operator", request_id=request_id)
    await _forget_rejection(runtime, event)
    try:
        outcome: Outcome | Unroutable = await runtime.send(event)
    except Exception as exc:
        if is_transient(exc):
            raise
        outcome = Unroutable("processing_error", f"{type(exc).__name__}: {exc}")
    return _event_account(event, outcome)


async def _forget_rejection(runtime: Runtime, event: Event) -> None:
    """Let an event whose earlier delivery the state machine refused apply now: drop its
    inbox row if (and only if) that row records a rejection."""
    instance_id = event.instance_id
    if instance_id is None and event.workflow is not None and event.business_key is not None:
        try:
            instance_id = (await runtime.find(event.workflow, event.business_key)).id
        except InstanceNotFound:
            return  # nothing to forget; the replay answers no_instance
    if instance_id is None:
        return
    await store.forget_rejected(runtime.db, instance_id, event.event_id)


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
    "summary_json",
]
