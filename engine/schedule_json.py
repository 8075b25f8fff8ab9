"""Schedules and their ticks as JSON (the HTTP API and ``conveyor schedules --json``)."""

from __future__ import annotations

from typing import Any

from engine.schedule_runner import ScheduleState, TickRecord


def schedule_json(state: ScheduleState) -> dict[str, Any]:
    spec = state.spec
    return {
        "name": spec.name,
        "description": spec.description,
        "cron": spec.cron,
        "every_seconds": spec.every.total_seconds() if spec.every is not None else None,
        "timezone": spec.timezone,
        "target": spec.target,
        "workflow": spec.workflow,
        "event_type": spec.event_type,
        "missed": spec.missed,
        "paused": state.paused,
        "next_tick": _time(state.next_tick),
        "last_tick": _time(state.last_tick),
        "last_outcome": state.last_outcome,
        "last_fired_at": _time(state.last_fired_at),
    }


def tick_json(tick: TickRecord) -> dict[str, Any]:
    return {
        "schedule": tick.schedule,
        "tick_id": tick.tick_id,
        "tick": tick.tick.isoformat(),
        "manual": tick.manual,
        "fired_at": tick.fired_at.isoformat(),
        "outcome": tick.outcome,
        "instance_id": str(tick.instance_id) if tick.instance_id is not None else None,
        "message_id": str(tick.message_id) if tick.message_id is not None else None,
        "business_key": tick.business_key,
        "detail": tick.detail,
        "lateness_seconds": round(tick.lateness_seconds, 3),
        "request_id": tick.request_id,
    }


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
