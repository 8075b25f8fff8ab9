"""The console's bulk actions (admin): from a filtered instance list, the dry-run count and
a sample, then cancel or retry every match as a durable job (:mod:`engine.bulk`), and the
job's progress (a page that polls ``/ui/bulk/<id>.json``) with its failed and skipped
items. The workers' job runners apply the job."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sanic import HTTPResponse, Request, json, redirect

from api.console.render import SECURITY_HEADERS, page
from api.console.views import bp, signed_in
from api.tracing import request_id_of
from api.validation import parse_uuid
from engine import bulk, data_filters
from engine.errors import InvalidRequest

FILTERS = (
    "workflow",
    "version",
    "state",
    "status",
    "business_key_prefix",
    "in_state_longer_than",
    "sla_breached",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
)
PAGING = ("cursor", "limit")
"""The instance list's paging parameters: not filters, left out."""

ACTIONS = ("cancel", "retry")
MAX_REASON = 1000
ITEMS_SHOWN = 100
NONCE = re.compile(r"^[0-9a-f]{32}$")


def filter_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The filter parameters of an instance list's query (without empty values and paging);
    InvalidRequest naming any parameter that is no filter."""
    kept: list[tuple[str, str]] = []
    unknown: list[str] = []
    for name, value in pairs:
        value = value.strip()
        if name in PAGING or not value:
            continue
        if name in FILTERS or name.startswith(data_filters.PREFIX):
            kept.append((name, value))
        else:
            unknown.append(name)
    if unknown:
        raise InvalidRequest(f"unknown filters: {', '.join(sorted(set(unknown)))}")
    return kept


def bulk_filter(pairs: Sequence[tuple[str, str]]) -> bulk.BulkFilter:
    """The bulk filter of the instance list's filter parameters (``data.<field>`` as the
    nested ``data`` object; each value parsed by its type, as the list parses it)."""
    raw: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name, value in pairs:
        if not name.startswith(data_filters.PREFIX):
            raw[name] = value
            continue
        path = name.removeprefix(data_filters.PREFIX).split(".")
        if not all(path):
            raise InvalidRequest(f"invalid filter {name!r}")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidRequest(f"{name}: conflicts with another data filter")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise InvalidRequest(f"{name}: conflicts with another data filter")
        node[path[-1]] = value
    if data:
        raw["data"] = data
    return bulk.parse_filter(raw, texts=True)


@bp.get("/bulk", ctx_public=True)
@signed_in("admin")
async def bulk_preview(request: Request) -> HTTPResponse:
    """The filter, how many instances it selects now and the oldest few; the forms."""
    runtime = request.app.ctx.runtime
    args = request.get_args(keep_blank_values=True)
    pairs = filter_pairs([(k, v) for k, vs in args.items() for v in vs])
    spec = bulk_filter(pairs)
    preview = await bulk.preview(runtime, bulk.BulkRequest(action="cancel", filter=spec))
    query = urlencode(pairs)
    return page(
        request,
        "bulk.html",
        filters=pairs,
        query=query,
        status_filter=dict(pairs).get("status"),
        count=preview.count,
        sample=[runtime.instance_json(i) for i in preview.sample],
        nonces={action: uuid.uuid4().hex for action in ACTIONS},
        max_items=bulk.MAX_JOB_ITEMS,
    )


@bp.post("/bulk", ctx_public=True)
@signed_in("admin")
async def bulk_create(request: Request) -> HTTPResponse:
    """Create the job (``action``: cancel or retry) over the form's ``filter`` (the list's
    query); a form sent twice (its ``nonce``) makes one job. To the job's progress."""
    runtime = request.app.ctx.runtime
    form: Any = request.form or {}
    action = form.get("action")
    if action not in ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}")
    reason = (form.get("reason") or "").strip()
    if len(reason) > MAX_REASON or "\x00" in reason:
        raise InvalidRequest(f"the reason must be at most {MAX_REASON} characters of text")
    pairs = filter_pairs(parse_qsl(form.get("filter") or "", keep_blank_values=True))
    wanted = bulk.BulkRequest(
        action=action,
        filter=bulk_filter(pairs),
        reason=reason,
        status_only=action == "cancel" and form.get("status_only") == "on",
    )
    nonce = form.get("nonce") or ""
    session = request.ctx.console
    job, _ = await bulk.create(
        runtime,
        wanted,
        request_id=request_id_of(request),
        idempotency_key=f"console:{session.key.id}:{nonce}" if NONCE.match(nonce) else None,
    )
    return redirect(f"/ui/bulk/{job.id}", status=303)


@bp.get("/bulk/<job_ref:str>", ctx_public=True)
@signed_in()
async def bulk_job(request: Request, job_ref: str) -> HTTPResponse:
    """A job's progress and its failed and skipped items; ``<id>.json``: the job as JSON
    (what the page polls)."""
    runtime = request.app.ctx.runtime
    as_json = job_ref.endswith(".json")
    job_id = parse_uuid(job_ref.removesuffix(".json"), "job id")
    job = await bulk.get(runtime, job_id)
    if as_json:
        return json(bulk.job_json(job), headers=SECURITY_HEADERS)
    failed = await bulk.items(runtime, job_id, status="failed", limit=ITEMS_SHOWN)
    skipped = await bulk.items(runtime, job_id, status="skipped", limit=ITEMS_SHOWN)
    spec_filter = job.spec.get("filter", {})
    return page(
        request,
        "bulk_job.html",
        job=bulk.job_json(job),
        failed=[bulk.item_json(i) for i in failed],
        skipped=[bulk.item_json(i) for i in skipped],
        items_shown=ITEMS_SHOWN,
        list_url=_list_url(spec_filter),
    )


@bp.post("/bulk/<job_ref:str>/stop", ctx_public=True)
@signed_in("admin")
async def bulk_stop(request: Request, job_ref: str) -> HTTPResponse:
    """Stop a running job: the items it has not reached are skipped (a batch being applied
    finishes first); a finished job stays as it is."""
    job = await bulk.cancel(request.app.ctx.runtime, parse_uuid(job_ref, "job id"))
    return redirect(f"/ui/bulk/{job.id}", status=303)


def _list_url(spec_filter: dict[str, Any]) -> str | None:
    """The instance list the job's filter came from (its data fields as ``data.<field>``)."""
    pairs: list[tuple[str, str]] = []
    for name, value in spec_filter.items():
        if name == "ids":
            return None
        if name == "data" and isinstance(value, dict):
            pairs.extend(_data_pairs(value, data_filters.PREFIX))
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, str(value)))
    return f"/ui/instances?{urlencode(pairs)}"


def _data_pairs(value: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        if isinstance(item, dict):
            pairs.extend(_data_pairs(item, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", str(item)))
    return pairs


__all__ = ["bulk_filter", "filter_pairs"]
