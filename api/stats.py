"""``/v1/stats``: how many instances are where, per workflow, version, state and status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from sanic import Blueprint, HTTPResponse, Request

from api.context import json_response, runtime_of
from api.schemas import StatsQuery
from api.validation import parse_query
from engine.runtime import Runtime
from engine.slas import state_slas
from engine.store.stats import StateCount, state_counts

bp = Blueprint("stats", url_prefix="/v1/stats")

STATS_TTL_SECONDS = 2.0
"""How long one count answers ``/v1/stats`` (per workflow filter) before it is redone."""


@bp.get("/", ctx_scope="read")
async def get_stats(request: Request) -> HTTPResponse:
    """Counts by workflow, version, state and status; per state the oldest time a running
    instance entered it, its SLA and how many are past it."""
    query = parse_query(request, StatsQuery)
    runtime = runtime_of(request)
    if query.workflow is not None:
        runtime.registry.get(query.workflow)  # 404 for a workflow this API does not know
    cache: StatsCache | None = getattr(request.app.ctx, "stats_cache", None)
    if cache is None:
        cache = request.app.ctx.stats_cache = StatsCache()
    answer = await cache.get(query.workflow, partial(stats_answer, runtime, query.workflow))
    return json_response(answer)


class StatsCache:
    """Counting every instance costs a scan of an index (a quarter of a second at a
    million instances), so an answer is shared: by the requests that arrive while it is
    computed, and by those within ``ttl`` seconds after (its ``as_of`` says when)."""

    def __init__(self, ttl: float = STATS_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._answers: dict[str | None, tuple[float, asyncio.Task[dict[str, Any]]]] = {}

    async def get(
        self, key: str | None, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        held = self._answers.get(key)
        if held is None or (held[1].done() and time.monotonic() - held[0] >= self.ttl):
            # A task of its own: a request that goes away does not cancel the others' answer.
            task = asyncio.ensure_future(compute())
            self._answers[key] = held = (time.monotonic(), task)
            task.add_done_callback(partial(self._settled, key))
        return await asyncio.shield(held[1])

    def _settled(self, key: str | None, task: asyncio.Task[dict[str, Any]]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._answers.pop(key, None)  # a failure is not kept: the next request retries
        else:
            self._answers[key] = (time.monotonic(), task)  # fresh from when it was counted


async def stats_answer(runtime: Runtime, workflow: str | None) -> dict[str, Any]:
    now = runtime.clock()
    slas = tuple(state_slas(runtime.registry, workflow))
    counts = await state_counts(runtime.db, workflow=workflow, now=now, slas=slas)
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
    return {"as_of": now.isoformat(), "workflows": list(workflows.values())}


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
