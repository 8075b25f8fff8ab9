"""The console's workflow pages: every registered workflow with its versions (and instance
counts, from the cached stats the overview shows), and one definition: its diagram,
states, events with their payload schemas, transitions, timers, SLAs, versions and
declared migrations. Names may contain dots (``warehouse.inbound``)."""

from __future__ import annotations

import functools
from typing import Any

from sanic import HTTPResponse, Request

from api.console.render import page
from api.console.views import bp, signed_in
from api.stats import StatsCache, stats_answer
from api.validation import path_segment
from engine.errors import InvalidRequest
from engine.introspect import describe, format_delay, mermaid
from engine.runtime import Runtime

MAX_VERSION = 2**31 - 1


@bp.get("/workflows", ctx_public=True)
@signed_in()
async def workflow_list(request: Request) -> HTTPResponse:
    """Each workflow: its description, versions and how many instances each has."""
    _no_query(request)
    runtime: Runtime = request.app.ctx.runtime
    counts = await _counts(request)
    names = sorted({d.spec.name for d in runtime.registry.all()})
    workflows = []
    for name in names:
        latest = runtime.registry.get(name).spec
        versions = [
            {"version": v, "counts": counts.get((name, v))} for v in runtime.registry.versions(name)
        ]
        workflows.append(
            {
                "name": name,
                "description": latest.description,
                "latest": latest.version,
                "versions": versions,
                "migrations": len(runtime.registry.migrations(name)),
            }
        )
    return page(request, "workflows.html", workflows=workflows)


@bp.get("/workflows/<name:str>", ctx_public=True)
@signed_in()
async def workflow_detail(request: Request, name: str) -> HTTPResponse:
    """One version of a workflow (``?version=``, default the latest)."""
    runtime: Runtime = request.app.ctx.runtime
    name = path_segment(name, "workflow name")
    version = _version(request)
    definition = runtime.registry.get(name, version)
    described = describe(definition)
    spec = definition.spec
    states = [
        {
            **state,
            "sla": format_delay(spec.slas[state["name"]]) if state["name"] in spec.slas else None,
            "timer_specs": [
                {"name": t.name, "after": format_delay(t.delay), "transition": t.transition}
                for t in spec.states[state["name"]].timers
            ],
        }
        for state in described["states"]
    ]
    transitions = [
        {**t, "timer_after": _timer_delay(definition, t)} for t in described["transitions"]
    ]
    counts = (await _counts(request)).get((name, spec.version))
    return page(
        request,
        "workflow.html",
        workflow=described,
        states=states,
        transitions=transitions,
        diagram=mermaid(definition),
        versions=runtime.registry.versions(name),
        migrations=[m.to_json() for m in runtime.registry.migrations(name)],
        counts=counts,
    )


def _timer_delay(definition: Any, transition: dict[str, Any]) -> str | None:
    if transition["timer"] is None:
        return None
    spec = definition.spec
    for source in transition["from"]:
        for timer in spec.states[source].timers:
            if timer.name == transition["timer"]:
                return format_delay(timer.delay)
    return None


def _version(request: Request) -> int | None:
    """``?version=`` (a positive integer), the only parameter; 400 naming any other."""
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(k for k in args if k != "version")
    if unknown:
        raise InvalidRequest(f"unknown query parameters: {', '.join(unknown)}")
    raw = args.get("version")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or not 1 <= int(raw) <= MAX_VERSION:
        raise InvalidRequest(f"version: {raw[:40]!r} is not a positive integer")
    return int(raw)


def _no_query(request: Request) -> None:
    args = request.get_args(keep_blank_values=True)
    if args:
        raise InvalidRequest(f"unknown query parameters: {', '.join(sorted(args))}")


async def _counts(request: Request) -> dict[tuple[str, int], dict[str, Any]]:
    """Instance counts by (workflow, version), from the stats cache the overview fills."""
    runtime = request.app.ctx.runtime
    cache: StatsCache | None = getattr(request.app.ctx, "stats_cache", None)
    if cache is None:
        cache = request.app.ctx.stats_cache = StatsCache()
    stats = await cache.get(None, functools.partial(stats_answer, runtime, None))
    return {(w["workflow"], w["version"]): w for w in stats["workflows"]}


__all__: list[str] = []
