"""Schedules (operator): what is declared and where each stands, the ticks each fired,
and pause, resume and trigger. The workers fire the ticks (:mod:`engine.schedule_runner`);
``conveyor schedules`` uses the same operations."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from api.context import json_response, runtime_of
from api.schedule_schemas import TicksQuery
from api.schemas import NoQuery
from api.tracing import request_id_of
from api.validation import parse_query
from engine import schedule_runner
from engine.schedule_json import schedule_json, tick_json

bp = Blueprint("schedules", url_prefix="/v1/schedules")


@bp.get("/", ctx_scope="read")
async def list_schedules(request: Request) -> HTTPResponse:
    """Every declared schedule, by name."""
    parse_query(request, NoQuery)
    runtime = runtime_of(request)
    states = await schedule_runner.list_schedules(runtime.db, runtime.registry, now=runtime.clock())
    return json_response({"items": [schedule_json(s) for s in states]})


@bp.get("/<name:str>", ctx_scope="read")
async def get_schedule(request: Request, name: str) -> HTTPResponse:
    """One schedule (404 for a name no schedule has)."""
    parse_query(request, NoQuery)
    runtime = runtime_of(request)
    state = await schedule_runner.get_schedule(
        runtime.db, runtime.registry, name, now=runtime.clock()
    )
    return json_response(schedule_json(state))


@bp.get("/<name:str>/ticks", ctx_scope="read")
async def list_ticks(request: Request, name: str) -> HTTPResponse:
    """The schedule's ticks, newest first: fired (scheduled or manual) and skipped."""
    query = parse_query(request, TicksQuery)
    runtime = runtime_of(request)
    runtime.registry.schedule(name)
    items, cursor = await schedule_runner.ticks(
        runtime.db, name, limit=query.limit, before=query.cursor
    )
    return json_response({"items": [tick_json(t) for t in items], "next_cursor": cursor})


@bp.post("/<name:str>/pause", ctx_scope="admin")
async def pause(request: Request, name: str) -> HTTPResponse:
    """Stop firing (idempotent); a manual trigger still works."""
    parse_query(request, NoQuery)
    runtime = runtime_of(request)
    state = await schedule_runner.pause(runtime.db, runtime.registry, name, runtime.clock())
    return json_response(schedule_json(state))


@bp.post("/<name:str>/resume", ctx_scope="admin")
async def resume(request: Request, name: str) -> HTTPResponse:
    """Fire again from the next tick on (ticks missed while paused are not fired)."""
    parse_query(request, NoQuery)
    runtime = runtime_of(request)
    state = await schedule_runner.resume(runtime.db, runtime.registry, name, runtime.clock())
    return json_response(schedule_json(state))


@bp.post("/<name:str>/trigger", ctx_scope="admin")
async def trigger(request: Request, name: str) -> HTTPResponse:
    """Fire now, once, with an id of its own (also while paused); 201 with the tick."""
    parse_query(request, NoQuery)
    runtime = runtime_of(request)
    tick = await schedule_runner.trigger(
        runtime, runtime.registry, name, runtime.clock(), request_id=request_id_of(request)
    )
    return json_response(tick_json(tick), 201)
