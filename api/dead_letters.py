"""``/v1/dead-letters``: what the worker could not apply; list, read, replay, discard.

The operations are :mod:`engine.deadletters` (the CLI's ``conveyor deadletters`` uses
them too); this module parses requests and shapes answers.
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from api.context import check_storable, json_response, runtime_of
from api.schemas import DeadLetterQuery, DiscardDeadLetter, ReplayDeadLetter
from api.tracing import request_id_of
from api.validation import parse_body, parse_query
from engine import deadletters
from engine.decide import FieldError
from engine.errors import InvalidRequest, PayloadInvalid
from engine.store.dead_letters import DeadLetterFilter

bp = Blueprint("dead_letters", url_prefix="/v1/dead-letters")

MAX_ID = 2**63 - 1


@bp.get("/", ctx_scope="read")
async def list_dead_letters(request: Request) -> HTTPResponse:
    """Dead letters matching the filters, newest first; ``next_cursor`` pages on."""
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
    page = await deadletters.list_dead_letters(
        runtime_of(request).db, filters, limit=query.limit, cursor=query.cursor
    )
    return json_response(deadletters.page_json(page))


@bp.get("/<letter_id:str>", ctx_scope="read")
async def get_dead_letter(request: Request, letter_id: str) -> HTTPResponse:
    """One dead letter: the message (key, headers, value), why, and what became of it."""
    letter = await deadletters.get(runtime_of(request).db, parse_letter_id(letter_id))
    return json_response(deadletters.detail_json(letter))


@bp.post("/<letter_id:str>/replay", ctx_scope="admin")
async def replay_dead_letter(request: Request, letter_id: str) -> HTTPResponse:
    """Operator: apply the message now, as stored or corrected; 422 when it still cannot
    apply (the dead letter stays pending), 409 when it was resolved already."""
    target = parse_letter_id(letter_id)
    body = parse_body(request, ReplayDeadLetter, optional=True)
    if body.value is not None and body.data is not None:
        raise PayloadInvalid(
            "the request body is invalid",
            [FieldError("value", "give value or data, not both")],
        )
    check_storable(body.value, "value")
    check_storable(body.data, "data")
    correction = deadletters.Correction(value=body.value, data=body.data, new_id=body.new_id)
    letter = await deadletters.replay(
        runtime_of(request), target, correction=correction, request_id=request_id_of(request)
    )
    return json_response(deadletters.detail_json(letter))


@bp.post("/<letter_id:str>/discard", ctx_scope="admin")
async def discard_dead_letter(request: Request, letter_id: str) -> HTTPResponse:
    """Operator: give up on the message (nothing is applied); 409 when it was resolved
    already."""
    target = parse_letter_id(letter_id)
    body = parse_body(request, DiscardDeadLetter, optional=True)
    letter = await deadletters.discard(
        runtime_of(request).db, target, reason=body.reason, request_id=request_id_of(request)
    )
    return json_response(deadletters.detail_json(letter))


def parse_letter_id(value: str) -> int:
    """A dead letter id: a positive integer in decimal digits (else 400)."""
    if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > MAX_ID:
        raise InvalidRequest(f"dead letter id {value[:80]!r} is not a positive integer")
    number = int(value)
    if number < 1:
        raise InvalidRequest(f"dead letter id {value[:80]!r} is not a positive integer")
    return number
