"""``conveyor deadletters list|show|replay|discard``: dead letters from the command line.

The commands talk to the database directly (like ``conveyor apikey``), through the same
operations as the HTTP API (:mod:`engine.deadletters`); a replay applies the message
through a runtime in this process. Exit status: 0 done, 1 refused (one line on stderr:
no such dead letter, already resolved, the replay still cannot apply), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import uvloop

from engine.errors import ConveyorError
from engine.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from engine.runtime import Runtime

STATUSES = ("pending", "replayed", "discarded")
# A replay holds its dead letter's row lock while the runtime applies the message on
# other connections: the command's pool needs more than one.
POOL_SIZE = 3


class _Usage(Exception):
    """A bad option value (exit 2)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``deadletters`` and its actions to the ``conveyor`` parser."""
    p = sub.add_parser(
        "deadletters",
        help="list, show, replay or discard dead letters",
        description="Messages the worker could not apply, as stored in PostgreSQL (they "
        "also went to the CONVEYOR_TOPIC_PREFIX.deadletter topic). Exit status: 0 done, "
        "1 refused, 2 usage.",
    )
    actions = p.add_subparsers(dest="deadletters_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "list",
        help="list dead letters, newest first",
        description="List dead letters, newest first, with filters.",
    )
    p.add_argument("--reason", help="e.g. invalid_payload, no_instance, undecodable")
    p.add_argument("--topic", help="the topic it was consumed from")
    p.add_argument("--workflow", help="the workflow it was for")
    p.add_argument("--business-key", help="the business key it was for")
    p.add_argument("--status", choices=STATUSES, help="pending, replayed or discarded")
    p.add_argument("--since", help="first seen at or after (ISO 8601; UTC if no offset)")
    p.add_argument("--until", help="first seen before (ISO 8601; UTC if no offset)")
    p.add_argument("--limit", type=_limit, default=50, help="how many (1 to 500; default 50)")
    p.add_argument("--cursor", type=_positive, help="continue after this id (the last shown)")
    p.set_defaults(func=cmd_list)

    p = actions.add_parser(
        "show",
        help="show one dead letter with its message",
        description="Show everything stored about a dead letter: where it came from, why, "
        "its key, headers and value, and what became of it.",
    )
    p.add_argument("id", type=_positive, help="the dead letter's id")
    p.set_defaults(func=cmd_show)

    p = actions.add_parser(
        "replay",
        help="apply a dead letter's message now",
        description="Apply the message now, through the same routing and runtime as the "
        "worker: as stored, or corrected. It keeps its CloudEvent id unless --new-id. On "
        "success the dead letter is marked replayed; when the message still cannot apply "
        "it stays pending and the command exits 1 saying why.",
    )
    p.add_argument("id", type=_positive, help="the dead letter's id")
    correction = p.add_mutually_exclusive_group()
    correction.add_argument(
        "--value-file",
        type=Path,
        help="a file holding the corrected CloudEvent (structured-mode JSON) to replay instead",
    )
    correction.add_argument(
        "--data-file",
        type=Path,
        help="a file holding the corrected data (a JSON object) of the stored CloudEvent",
    )
    p.add_argument("--new-id", action="store_true", help="replay under a new CloudEvent id")
    p.set_defaults(func=cmd_replay)

    p = actions.add_parser(
        "discard",
        help="give up on a dead letter",
        description="Mark a pending dead letter discarded; nothing is applied.",
    )
    p.add_argument("id", type=_positive, help="the dead letter's id")
    p.add_argument("--reason", default="", help="why (kept with it)")
    p.set_defaults(func=cmd_discard)


# ------------------------------------------------------------------ commands


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine import deadletters  # lazy: the database driver, for this command only
    from engine.store.dead_letters import DeadLetterFilter

    try:
        filters = DeadLetterFilter(
            reason=args.reason,
            topic=args.topic,
            workflow=args.workflow,
            business_key=args.business_key,
            status=args.status,
            since=_time(args.since, "--since"),
            until=_time(args.until, "--until"),
        )
    except _Usage as exc:
        return _usage("list", str(exc))

    async def show(db: AsyncEngine) -> int:
        page = await deadletters.list_dead_letters(
            db, filters, limit=args.limit, cursor=args.cursor
        )
        print(
            f"{'id':>8}  {'first seen':<20}  {'reason':<20}  {'workflow':<18}  "
            f"{'business key':<20}  {'event type':<26}  status"
        )
        for item in page.items:
            print(
                f"{item.id:>8}  {item.first_seen_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}   "
                f"{_cell(item.reason, 20)}  {_cell(item.workflow, 18)}  "
                f"{_cell(item.business_key, 20)}  {_cell(item.event_type, 26)}  {item.status}"
            )
        if page.next_cursor is not None:
            print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
        return 0

    return _run(settings, "list", show)


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from engine import deadletters  # lazy: the database driver, for this command only

    async def show(db: AsyncEngine) -> int:
        _print_detail(deadletters.detail_json(await deadletters.get(db, args.id)))
        return 0

    return _run(settings, "show", show)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from engine import deadletters  # lazy: the runtime and the database driver

    try:
        value = _json_object(args.value_file, "--value-file") if args.value_file else None
        data = _json_object(args.data_file, "--data-file") if args.data_file else None
    except _Usage as exc:
        return _usage("replay", str(exc))
    correction = deadletters.Correction(value=value, data=data, new_id=args.new_id)

    async def replay(db: AsyncEngine) -> int:
        letter = await deadletters.replay(
            _runtime(db, settings), args.id, correction=correction, request_id=_request_id()
        )
        resolution = letter.resolution or {}
        moved = (
            f" ({resolution.get('from_state') or '-'} -> {resolution.get('to_state')})"
            if resolution.get("to_state")
            else ""
        )
        print(
            f"replayed dead letter {letter.id}: {resolution.get('status')} "
            f"event {resolution.get('event_id')} instance {resolution.get('instance_id')}{moved}"
        )
        return 0

    return _run(settings, "replay", replay)


def cmd_discard(args: argparse.Namespace, settings: Settings) -> int:
    from engine import deadletters  # lazy: the database driver, for this command only

    async def discard(db: AsyncEngine) -> int:
        letter = await deadletters.discard(
            db, args.id, reason=args.reason, request_id=_request_id()
        )
        print(f"discarded dead letter {letter.id}")
        return 0

    return _run(settings, "discard", discard)


# ------------------------------------------------------------------ helpers


def _run(settings: Settings, command: str, use: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    """Run ``use`` with a small engine; a refusal is one line on stderr and status 1."""
    from engine.store.database import create_engine  # lazy: the database driver

    async def main() -> int:
        db = create_engine(settings, pool_size=POOL_SIZE)
        try:
            return await use(db)
        except ConveyorError as exc:
            if exc.status_code >= 500:
                raise
            reason = getattr(exc, "reason", None)
            because = f" ({reason})" if isinstance(reason, str) else ""
            print(f"conveyor deadletters {command}: {exc}{because}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()

    return uvloop.run(main())


def _runtime(db: AsyncEngine, settings: Settings) -> Runtime:
    from engine.registry import load_workflows  # lazy: the workflows, for replay only
    from engine.runtime import Runtime

    return Runtime(
        db, load_workflows(settings.workflow_modules), topic_prefix=settings.topic_prefix
    )


def _request_id() -> str:
    """Who resolved it, as the dead letter's ``resolved_by`` will say."""
    return f"cli:{os.environ.get('USER') or 'unknown'}:{uuid.uuid4().hex[:12]}"


def _print_detail(detail: dict[str, Any]) -> None:
    skip = {"headers", "key", "key_encoding", "value", "value_encoding", "resolution"}
    for name, item in detail.items():
        if name not in skip:
            print(f"{name + ':':<15} {'-' if item is None else item}")
    key = detail["key"]
    print(f"{'key:':<15} {'-' if key is None else key}" + _encoding(detail["key_encoding"]))
    print("headers:")
    for name, item in detail["headers"]:
        print(f"  {_part(name)}: {_part(item)}")
    print("value" + _encoding(detail["value_encoding"]) + ":")
    print("  -" if detail["value"] is None else detail["value"])
    if detail["resolution"] is not None:
        print("resolution:")
        print(orjson.dumps(detail["resolution"], option=orjson.OPT_INDENT_2).decode())


def _encoding(encoding: str | None) -> str:
    return " (base64)" if encoding == "base64" else ""


def _part(part: Any) -> str:
    return f"base64:{part['base64']}" if isinstance(part, dict) else str(part)


def _cell(text: str | None, width: int) -> str:
    text = "-" if text is None else text
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def _json_object(path: Path, option: str) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise _Usage(f"{option}: cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise _Usage(f"{option}: {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Usage(f"{option}: {path} must hold a JSON object")
    return value


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Usage(f"{option}: {text!r} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _limit(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 500")
    return int(text)


def _usage(command: str, message: str) -> int:
    print(f"conveyor deadletters {command}: {message}", file=sys.stderr)
    return 2


__all__ = ["register"]
