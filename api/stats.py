"""``/v1/stats``: how many instances are where, per workflow, version, state and status."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, HTTPResponse, Request

from api.context import json_response, runtime_of
from api.schemas import StatsQuery
from api.validation import parse_query
from engine.slas import state_slas
from engine.store.stats import StateCount, state_counts

bp = Blueprint("stats", url_prefix="/v1/stats")


@bp.get("/", ctx_scope="read")
async def get_stats(request: Request) -> HTTPResponse:
    """Counts by workflow, version, state and status; per state the oldest time a running
    instance entered it, its SLA and how many are past it."""
    query = parse_query(request, StatsQuery)
    runtime = runtime_of(request)
    if query.workflow is not None:
        runtime.registry.get(query.workflow)  # 404 for a workflow this API does not know
    now = runtime.clock()
    slas = tuple(state_slas(runtime.registry, query.workflow))
    counts = await state_counts(runtime.db, workflow=query.workflow, now=now, slas=slas)
    sla_of = {(s.workflow, s.version, s.state): s.sla for s in slas}
    workflows: dict[tuple[str, int], dict[str, Any]] = {}
    for count in counts:
        entry = workflows.setdefault(
            (count.workflow, count.version),
            {
                "workflow": count.workflow,
                "version": count.version,
                "total": 0,
                "by_status": {},
                "sla_breached": 0,
                "states": [],
            },
        )
        entry["total"] += count.total
        entry["sla_breached"] += count.sla_breached
        for status, n in count.by_status.items():
            entry["by_status"][status] = entry["by_status"].get(status, 0) + n
        entry["states"].append(_state_json(count, sla_of))
    return json_response({"as_of": now.isoformat(), "workflows": list(workflows.values())})


def _state_json(count: StateCount, sla_of: dict[tuple[str, int, str], Any]) -> dict[str, Any]:
    sla = sla_of.get((count.workflow, count.version, count.state))
    oldest = count.oldest_running_since
    return {
        "state": count.state,
        "total": count.total,
        "by_status": count.by_status,
        "oldest_state_entered_at": None if oldest is None else oldest.isoformat(),
        "sla_seconds": None if sla is None else sla.total_seconds(),
        "sla_breached": count.sla_breached,
    }
