"""Migrating running instances to another version of their workflow (operator): the
migrations a workflow declares, a dry run judging each selected instance by replay, and a
durable job applying the migration, read and cancelled like a bulk job.

The operations are :mod:`engine.migrate` (``conveyor instances migrate`` uses them too);
the workers apply the jobs (:mod:`engine.bulk_runner`).
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from api.bulk_schemas import BulkItemsQuery
from api.context import check_storable, json_response, runtime_of
from api.migration_schemas import CreateMigrationUnchecked
from api.schemas import NoQuery
from api.tracing import request_id_of
from api.validation import parse_body, parse_query, parse_uuid
from api.workflows import idempotency_key
from engine import bulk, migrate, migration_jobs

bp = Blueprint("migrations", url_prefix="/v1")


@bp.get("/workflows/<name:str>/migrations", ctx_scope="read")
async def list_migrations(request: Request, name: str) -> HTTPResponse:
    """The migrations declared for workflow ``name`` (404 for an unknown workflow)."""
    parse_query(request, NoQuery)
    registry = runtime_of(request).registry
    registry.get(name)
    return json_response({"items": [m.to_json() for m in registry.migrations(name)]})


@bp.post("/workflows/<name:str>/migrations", ctx_scope="admin")
async def create_migration(request: Request, name: str) -> HTTPResponse:
    """Dry run: 200 with the report, nothing written. Else 202 with the job (and
    ``Location``); the workers apply it. With ``Idempotency-Key`` a retried creation
    answers 200 with the job made the first time."""
    parse_query(request, NoQuery)
    body = parse_body(request, CreateMigrationUnchecked)
    check_storable(body.filter, "filter")
    runtime = runtime_of(request)
    runtime.registry.get(name)
    migration = migrate.MigrationRequest(
        workflow=name,
        from_version=body.from_version,
        to_version=body.to_version,
        filter=migrate.parse_filter(body.filter),
        force=body.force,
    )
    if body.dry_run:
        report = await migrate.dry_run(runtime, migration)
        return json_response(report.to_json(force=body.force))
    key = idempotency_key(request)
    job, created = await migrate.create(
        runtime,
        migration,
        request_id=request_id_of(request),
        idempotency_key=f"{request.ctx.api_key.id}:{key}" if key is not None else None,
    )
    return json_response(
        migrate.job_json(job), 202 if created else 200, {"Location": f"/v1/migrations/{job.id}"}
    )


@bp.get("/migrations/<job_id:str>", ctx_scope="read")
async def get_job(request: Request, job_id: str) -> HTTPResponse:
    """A migration job: its status, counters and progress."""
    parse_query(request, NoQuery)
    job = await migrate.get(runtime_of(request), parse_uuid(job_id, "job id"))
    return json_response(migrate.job_json(job))


@bp.get("/migrations/<job_id:str>/items", ctx_scope="read")
async def get_items(request: Request, job_id: str) -> HTTPResponse:
    """A migration job's items in instance id order, with why each was skipped (diverges,
    unmapped, invalid_data, no longer selected) or what it was migrated to."""
    target = parse_uuid(job_id, "job id")
    query = parse_query(request, BulkItemsQuery)
    after = parse_uuid(query.cursor, "cursor") if query.cursor is not None else None
    found = await migrate.items(
        runtime_of(request), target, status=query.status, after=after, limit=query.limit + 1
    )
    page = found[: query.limit]
    return json_response(
        {
            "items": [bulk.item_json(i) for i in page],
            "next_cursor": str(page[-1].instance_id) if len(found) > query.limit else None,
        }
    )


@bp.post("/migrations/<job_id:str>/cancel", ctx_scope="admin")
async def cancel_job(request: Request, job_id: str) -> HTTPResponse:
    """Stop a running migration job: the instances it has not reached stay where they are
    (their items are skipped, "job cancelled"); a finished job is answered as it is."""
    parse_query(request, NoQuery)
    job = await migration_jobs.cancel(runtime_of(request), parse_uuid(job_id, "job id"))
    return json_response(migrate.job_json(job))
