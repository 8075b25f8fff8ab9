"""``/v1/bulk``: bulk actions (operator): cancel, retry or send an event to every instance
a filter selects, as a durable job; read its progress and its items; cancel it.

The operations are :mod:`engine.bulk` (the CLI's ``conveyor instances`` uses them too);
the workers apply jobs (:mod:`engine.bulk_runner`).
"""

from __future__ import annotations

import uuid

from sanic import Blueprint, HTTPResponse, Request

from api.bulk_schemas import BulkItemsQuery, CreateBulkJobUnchecked
from api.context import check_storable, json_response, runtime_of
from api.schemas import NoQuery
from api.tracing import request_id_of
from api.validation import parse_body, parse_query, parse_uuid
from api.workflows import idempotency_key
from engine import bulk

bp = Blueprint("bulk", url_prefix="/v1/bulk")


@bp.post("/", ctx_scope="admin")
async def create_job(request: Request) -> HTTPResponse:
    """Dry run: 200 with the count and a sample, nothing written. Else 202 with the job
    (and ``Location``); the workers apply it. With ``Idempotency-Key`` a retried creation
    answers 200 with the job made the first time."""
    body = parse_body(request, CreateBulkJobUnchecked)
    check_storable(body.filter, "filter")
    if body.event is not None:
        check_storable(body.event.payload, "event.payload")
    request_ = bulk.BulkRequest(
        action=body.action,
        filter=bulk.parse_filter(body.filter),
        reason=body.reason,
        event_type=body.event.type if body.event else None,
        payload=body.event.payload if body.event else {},
        status_only=body.status_only,
    )
    runtime = runtime_of(request)
    if body.dry_run:
        preview = await bulk.preview(runtime, request_)
        return json_response(
            {
                "dry_run": True,
                "action": body.action,
                "count": preview.count,
                "sample": [runtime.instance_json(i) for i in preview.sample],
            }
        )
    key = idempotency_key(request)
    job, created = await bulk.create(
        runtime,
        request_,
        request_id=request_id_of(request),
        idempotency_key=f"{request.ctx.api_key.id}:{key}" if key is not None else None,
    )
    return json_response(
        bulk.job_json(job), 202 if created else 200, {"Location": f"/v1/bulk/{job.id}"}
    )


@bp.get("/<job_id:str>", ctx_scope="read")
async def get_job(request: Request, job_id: str) -> HTTPResponse:
    """A job: its status, counters and progress."""
    parse_query(request, NoQuery)
    job = await bulk.get(runtime_of(request), parse_uuid(job_id, "job id"))
    return json_response(bulk.job_json(job))


@bp.get("/<job_id:str>/items", ctx_scope="read")
async def get_items(request: Request, job_id: str) -> HTTPResponse:
    """A job's items in instance id order, with why each was skipped or failed."""
    target = parse_uuid(job_id, "job id")
    query = parse_query(request, BulkItemsQuery)
    after = parse_uuid(query.cursor, "cursor") if query.cursor is not None else None
    found = await bulk.items(
        runtime_of(request), target, status=query.status, after=after, limit=query.limit + 1
    )
    page = found[: query.limit]
    return json_response(
        {
            "items": [bulk.item_json(i) for i in page],
            "next_cursor": str(page[-1].instance_id) if len(found) > query.limit else None,
        }
    )


@bp.post("/<job_id:str>/cancel", ctx_scope="admin")
async def cancel_job(request: Request, job_id: str) -> HTTPResponse:
    """Stop a running job: the items it has not reached are skipped ("job cancelled"); a
    finished job is answered as it is."""
    parse_query(request, NoQuery)
    target: uuid.UUID = parse_uuid(job_id, "job id")
    job = await bulk.cancel(runtime_of(request), target)
    return json_response(bulk.job_json(job))
