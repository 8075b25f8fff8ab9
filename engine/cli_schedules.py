"""``conveyor schedules list|show|pause|resume|trigger``: schedules from the command line.

The commands talk to the database directly, through the same operations as the HTTP API
(:mod:`engine.schedule_runner`); a trigger fires through a runtime in this process.
Exit status: 0 done, 1 refused (one line on stderr: no such schedule), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
import uvloop

from engine.errors import ConveyorError
from engine.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from engine.registry import Registry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``schedules`` and its actions to the ``conveyor`` parser."""
    p = sub.add_parser(
        "schedules",
        help="list, show, pause, resume or trigger schedules",
        description="Schedules declared beside the workflows (CONVEYOR_WORKFLOW_MODULES) and "
        "fired by the workers. Exit status: 0 done, 1 refused, 2 usage.",
    )
    actions = p.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every schedule: next tick, last tick and outcome")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("show", help="one schedule and its latest ticks")
    p.add_argument("name")
    p.add_argument("--ticks", type=_count, default=20, help="how many ticks (1-1000; 20)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_show)
    for action, text in (
        ("pause", "stop firing (a trigger still works)"),
        ("resume", "fire again from the next tick (ticks missed while paused are not fired)"),
        ("trigger", "fire now, once, with an id of its own"),
    ):
        p = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("name")
        p.set_defaults(func=cmd_action, action=action)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine import schedule_runner
    from engine.clock import utc_now
    from engine.schedule_json import schedule_json

    async def show(db: AsyncEngine, registry: Registry) -> int:
        states = await schedule_runner.list_schedules(db, registry, now=utc_now())
        if args.json:
            print(orjson.dumps([schedule_json(s) for s in states]).decode())
            return 0
        if not states:
            print("no schedules are declared (CONVEYOR_WORKFLOW_MODULES)")
            return 0
        print(f"{'name':<28}{'when':<32}{'target':<30}{'next tick':<27}{'last':<10}paused")
        for state in states:
            spec = state.spec
            nxt = state.next_tick.isoformat(timespec="seconds") if state.next_tick else "-"
            print(
                f"{_cell(spec.name, 28)}{_cell(spec.when, 32)}{_cell(spec.target, 30)}"
                f"{nxt:<27}{_cell(state.last_outcome, 10)}{'yes' if state.paused else 'no'}"
            )
        return 0

    return _run(settings, "list", show)


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from engine import schedule_runner
    from engine.clock import utc_now
    from engine.schedule_json import schedule_json, tick_json

    async def show(db: AsyncEngine, registry: Registry) -> int:
        state = await schedule_runner.get_schedule(db, registry, args.name, now=utc_now())
        ticks, _ = await schedule_runner.ticks(db, args.name, limit=args.ticks)
        if args.json:
            body = {**schedule_json(state), "ticks": [tick_json(t) for t in ticks]}
            print(orjson.dumps(body).decode())
            return 0
        for name, value in schedule_json(state).items():
            print(f"{name + ':':<15} {'-' if value in (None, '') else value}")
        print("ticks (newest first):")
        for tick in ticks:
            where = tick.business_key or "-"
            late = f"{tick.lateness_seconds:.1f} s late" if not tick.manual else "manual"
            print(
                f"  {tick.tick.isoformat(timespec='seconds')}  {tick.outcome:<10} {where}  "
                f"({late}){'  ' + tick.detail if tick.detail else ''}"
            )
        return 0

    return _run(settings, "show", show)


def cmd_action(args: argparse.Namespace, settings: Settings) -> int:
    from engine import schedule_runner
    from engine.clock import utc_now

    async def act(db: AsyncEngine, registry: Registry) -> int:
        if args.action == "trigger":
            from engine.runtime import Runtime  # lazy: only a trigger fires

            runtime = Runtime(db, registry, topic_prefix=settings.topic_prefix)
            tick = await schedule_runner.trigger(
                runtime, registry, args.name, utc_now(), request_id=_request_id()
            )
            print(f"fired {tick.tick_id}: {tick.outcome} {tick.business_key or ''}".rstrip())
            return 0
        change = schedule_runner.pause if args.action == "pause" else schedule_runner.resume
        state = await change(db, registry, args.name, utc_now())
        nxt = state.next_tick.isoformat(timespec="seconds") if state.next_tick else "-"
        print(f"{state.spec.name}: {'paused' if state.paused else 'running'}; next tick {nxt}")
        return 0

    return _run(settings, args.action, act)


def _run(
    settings: Settings,
    command: str,
    use: Callable[[AsyncEngine, Registry], Awaitable[int]],
) -> int:
    """Run ``use`` with a small engine and the loaded schedules; a refusal is one line on
    stderr and status 1."""
    from engine.registry import load_workflows
    from engine.store.database import create_engine  # lazy: the database driver

    registry = load_workflows(settings.workflow_modules)

    async def main() -> int:
        db = create_engine(settings, pool_size=2)
        try:
            return await use(db, registry)
        except ConveyorError as exc:
            if exc.status_code >= 500:
                raise
            print(f"conveyor schedules {command}: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()

    return uvloop.run(main())


def _request_id() -> str:
    return f"cli:{os.environ.get('USER') or 'unknown'}:{uuid.uuid4().hex[:12]}"


def _cell(text: str | None, width: int) -> str:
    text = "-" if text is None else text
    return (text if len(text) < width else text[: width - 2] + "…").ljust(width)


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000")
    return int(text)


__all__ = ["register"]
