"""The console's dead letters: the list (filters, newest first, cursor paging, pending
counts by reason), one dead letter with its original message, and the operator's actions
on it (replay as stored or with an edited payload, discard), through
:mod:`engine.deadletters` exactly as ``/v1/dead-letters`` calls it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from sanic import HTTPResponse, Request, redirect

from api.console.render import page
from api.console.views import bp, signed_in
from api.context import check_storable
from api.dead_letters import parse_letter_id
from api.schemas import DeadLetterQuery
from api.tracing import request_id_of
from api.validation import parse_query
from engine import deadletters
from engine.errors import ConveyorError, PayloadInvalid
from engine.store import dead_letters as store
from engine.store.dead_letters import DeadLetterFilter, DeadLetterRecord
from engine.wire.cloudevents import InvalidMessage, decode

FILTERS = ("status", "reason", "workflow", "business_key")
MAX_NOTE = 200


@bp.get("/dead-letters", ctx_public=True)
@signed_in()
async def dead_letter_list(request: Request) -> HTTPResponse:
    """Dead letters newest first, with the pending ones counted by reason."""
    tidy = tidy_query(request)
    if tidy is not None:
        return redirect(f"/ui/dead-letters?{urlencode(tidy)}" if tidy else "/ui/dead-letters")
    query = parse_query(request, DeadLetterQuery)
    filters = DeadLetterFilter(
        reason=query.reason,
        topic=query.topic,
        workflow=query.workflow,
        business_key=query.business_key,
        status=query.status,
        since=query.since,
        until=query.until,
    )
    db = request.app.ctx.runtime.db
    found = await deadletters.list_dead_letters(db, filters, limit=query.limit, cursor=query.cursor)
    kept = [(k, v) for k, vs in request.args.items() if k != "cursor" for v in vs]
    return page(
        request,
        "dead_letters.html",
        items=[deadletters.summary_json(i) for i in found.items],
        pending=await store.pending_by_reason(db),
        values={k: request.args.get(k, "") for k in FILTERS},
        statuses=store.STATUSES,
        first_page=query.cursor is None,
        first_url=f"/ui/dead-letters?{urlencode(kept)}",
        next_url=(
            f"/ui/dead-letters?{urlencode([*kept, ('cursor', found.next_cursor)])}"
            if found.next_cursor
            else None
        ),
    )


@bp.get("/dead-letters/<letter_id:str>", ctx_public=True)
@signed_in()
async def dead_letter_detail(request: Request, letter_id: str) -> HTTPResponse:
    """One dead letter: why, where from, the message, and what became of it."""
    letter = await deadletters.get(request.app.ctx.runtime.db, parse_letter_id(letter_id))
    done = request.args.get("done")
    return _detail(request, letter, notice=_NOTICES.get(done or ""))


@bp.post("/dead-letters/<letter_id:str>/replay", ctx_public=True)
@signed_in("admin")
async def replay(request: Request, letter_id: str) -> HTTPResponse:
    """Replay as stored (``mode=as_is``) or with the edited ``data`` (``mode=edited``),
    optionally under a new CloudEvent id (``new_id``); the page shows what happened."""
    runtime = request.app.ctx.runtime
    target = parse_letter_id(letter_id)
    form: Any = request.form or {}
    mode = form.get("mode") or "as_is"
    edited = form.get("data")
    correction = deadletters.Correction(new_id=form.get("new_id") == "on")
    if mode == "edited":
        parsed = parse_payload(edited or "")
        if isinstance(parsed, str):
            letter = await deadletters.get(runtime.db, target)
            return _detail(request, letter, status=422, error=parsed, edited=edited)
        correction = deadletters.Correction(data=parsed, new_id=correction.new_id)
    elif mode != "as_is":
        letter = await deadletters.get(runtime.db, target)
        return _detail(request, letter, status=400, error=f"Unknown replay mode {mode[:40]!r}.")
    try:
        check_storable(correction.data, "data")
        await deadletters.replay(
            runtime, target, correction=correction, request_id=request_id_of(request)
        )
    except ConveyorError as error:
        letter = await deadletters.get(runtime.db, target)
        return _detail(
            request, letter, status=error.status_code, error=describe(error), edited=edited
        )
    return redirect(f"/ui/dead-letters/{target}?done=replayed", status=303)


@bp.post("/dead-letters/<letter_id:str>/discard", ctx_public=True)
@signed_in("admin")
async def discard(request: Request, letter_id: str) -> HTTPResponse:
    """Give up on the message, keeping the reason given."""
    runtime = request.app.ctx.runtime
    target = parse_letter_id(letter_id)
    form: Any = request.form or {}
    reason = (form.get("reason") or "").strip()[:MAX_NOTE]
    try:
        await deadletters.discard(
            runtime.db, target, reason=reason, request_id=request_id_of(request)
        )
    except ConveyorError as error:
        letter = await deadletters.get(runtime.db, target)
        return _detail(request, letter, status=error.status_code, error=describe(error))
    return redirect(f"/ui/dead-letters/{target}?done=discarded", status=303)


_NOTICES = {
    "replayed": "Replayed: the outcome is below.",
    "discarded": "Discarded: nothing was applied.",
}


def parse_payload(text: str) -> Any:
    """The edited payload as JSON, or why it is not (a message for the page)."""
    if not text.strip():
        return "The payload is empty: give a JSON value (for example {})."
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"The payload is not valid JSON: {exc}. Nothing was replayed."


def describe(error: ConveyorError) -> str:
    """An engine error as one line for the page, with the fields it names."""
    text = str(error)
    if isinstance(error, PayloadInvalid) and error.field_errors:
        fields = (f"{f.path or '(payload)'}: {f.message}" for f in error.field_errors)
        text += ": " + "; ".join(fields)
    if isinstance(error, deadletters.ReplayFailed):
        text = f"Still not applied ({error.reason}): {text}. The dead letter stays pending."
    return text


def message_data(letter: DeadLetterRecord) -> tuple[bool, Any]:
    """(True, the CloudEvent's ``data``) when the stored message decodes as one, else
    (False, None): only then can its payload be edited."""
    try:
        event = decode(letter.value, letter.headers)
    except InvalidMessage:
        return False, None
    return True, event.data


def shown_bytes(raw: bytes | None) -> dict[str, Any]:
    """A key or value for the page: pretty JSON when it is JSON, else text, else base64."""
    text, encoding = deadletters.bytes_json(raw)
    if text is None or encoding != "utf-8":
        return {"text": text, "encoding": encoding, "json": False}
    try:
        return {"text": _pretty(orjson.loads(text)), "encoding": encoding, "json": True}
    except orjson.JSONDecodeError:
        return {"text": text, "encoding": encoding, "json": False}


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _detail(
    request: Request,
    letter: DeadLetterRecord,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    edited: str | None = None,
) -> HTTPResponse:
    editable, data = message_data(letter)
    resolution: dict[str, Any] = dict(letter.resolution or {})
    attempts = resolution.pop("attempts", None) or []
    return page(
        request,
        "dead_letter.html",
        status=status,
        letter=deadletters.detail_json(letter),
        key=shown_bytes(letter.key),
        value=shown_bytes(letter.value),
        headers=store.headers_to_json(letter.headers),
        resolution=resolution if letter.status != "pending" else None,
        attempts=attempts,
        editable=editable,
        data_text=edited if edited is not None else (_pretty(data) if editable else ""),
        error=error,
        notice=notice,
    )


def tidy_query(request: Request) -> list[tuple[str, str]] | None:
    """The query without the filter form's empty fields; None when it has none."""
    args = request.get_args(keep_blank_values=True)
    pairs = [(k, v) for k, vs in args.items() for v in vs]
    tidy = [(k, v.strip()) for k, v in pairs if v.strip()]
    return tidy if len(tidy) != len(pairs) else None


__all__ = ["describe", "message_data", "parse_payload", "shown_bytes", "tidy_query"]
