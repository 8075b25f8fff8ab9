"""The ``conveyor`` command line.

Each command imports its own stack when it runs (the ``# lazy:`` lines): ``conveyor worker``
never loads sanic, ``conveyor migrate`` never loads aiokafka, and ``--help`` loads neither.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import uvloop
from pydantic import ValidationError
from pydantic_settings import SettingsError

from engine import cli_instances
from engine.cli_check import register as register_check
from engine.cli_check import start_check
from engine.cli_deadletters import register as register_deadletters
from engine.cli_schedules import register as register_schedules
from engine.errors import InvalidRequest
from engine.observability import configure_logging, get_logger
from engine.settings import Settings, describe_invalid

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = get_logger("conveyor.cli")
T = TypeVar("T")


def _listen_problem(host: str, port: int) -> str | None:
    """Why the API could not listen on ``host:port``, or ``None`` if it can.

    Binds (and at once closes) a socket to each address ``host`` resolves to, the way the
    server will (``SO_REUSEADDR``, IPv6 only on IPv6 sockets), so that a port in use fails
    here with one clear line rather than in Sanic after "serving on", with a traceback.
    """
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve CONVEYOR_HTTP_HOST {host!r}: {exc.strerror}"
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (
                        f"port {port} on {address[0]} is in use; stop what listens there or "
                        "set CONVEYOR_HTTP_PORT to another port"
                    )
                return f"cannot listen on port {port} on {address[0]}: {exc.strerror}"
    return None


def _serve_api(settings: Settings, *, command: str, with_worker: bool) -> int:
    problem = _listen_problem(settings.http_host, settings.http_port)
    if problem is not None:
        print(f"conveyor {command}: {problem}", file=sys.stderr)
        return 1
    if not start_check(settings, command):
        return 1

    # lazy: the API's stack (sanic, the database, Kafka) is loaded by the commands that serve it
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from api.app import create_app

    loader = AppLoader(factory=partial(create_app, settings, with_worker=with_worker))
    app = loader.load()
    workers = 1 if with_worker else settings.http_workers
    app.prepare(
        host=settings.http_host,
        port=settings.http_port,
        workers=workers,
        single_process=workers == 1,
        access_log=False,
        motd=False,
    )
    print(f"Conveyor API serving on http://{settings.http_host}:{settings.http_port}", flush=True)
    if workers == 1:
        Sanic.serve_single(primary=app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    return _serve_api(settings, command="api", with_worker=False)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    return _serve_api(settings, command="dev", with_worker=True)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from engine.worker import run_worker  # lazy: the worker's stack, not sanic

    if args.services is not None:
        try:
            settings = Settings(worker_services=args.services)
        except ValidationError as exc:
            for line in describe_invalid(exc, names={"worker_services": "--services"}):
                print(f"conveyor worker: {line}", file=sys.stderr)
            return 2
    if not start_check(settings, "worker"):
        return 1
    return _run_async(run_worker(settings))


def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    from engine.messaging.emit import emit  # lazy: aiokafka, for this command only

    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        print(f"--data is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(data, dict):
        print("--data must be a JSON object", file=sys.stderr)
        return 2
    sent = uvloop.run(
        emit(
            settings,
            args.type,
            key=args.key,
            data=data,
            topic=args.topic,
            binary=args.binary,
            event_id=args.id,
            source=args.source,
        )
    )
    print(f"emitted {args.type} id={sent.id} to {sent.topic}[{sent.partition}]@{sent.offset}")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.store.migrations import upgrade  # lazy: alembic and the database driver

    _run_async(upgrade(settings, args.revision))
    where = f" (schema {settings.database_schema})" if settings.database_schema else ""
    print(f"database migrated to {args.revision}{where}")
    return 0


def cmd_apikey_create(args: argparse.Namespace, settings: Settings) -> int:
    from engine.auth import create_api_key, parse_scopes  # lazy: the database driver

    try:
        scopes = parse_scopes(args.scopes)
    except InvalidRequest as exc:
        print(f"conveyor apikey create: {exc}", file=sys.stderr)
        return 2

    async def create() -> int:
        created = await _with_engine(settings, lambda db: create_api_key(db, args.name, scopes))
        key = created.key
        # The key alone goes to stdout (KEY=$(conveyor apikey create ...)); the rest to stderr.
        print(
            f"created API key {key.prefix} ({key.name}; scopes: {', '.join(key.scopes)}); "
            "store it now, it is not shown again:",
            file=sys.stderr,
        )
        print(created.secret)
        return 0

    return _run_async(create())


def cmd_apikey_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine.auth import list_api_keys  # lazy: the database driver

    async def show() -> int:
        listings = await _with_engine(settings, list_api_keys)
        print(f"{'prefix':<10}{'name':<24}{'scopes':<20}{'created':<27}revoked")
        for item in listings:
            key = item.key
            revoked = item.revoked_at.isoformat(timespec="seconds") if item.revoked_at else "-"
            print(
                f"{key.prefix:<10}{key.name[:23]:<24}{','.join(key.scopes):<20}"
                f"{item.created_at.isoformat(timespec='seconds'):<27}{revoked}"
            )
        return 0

    return _run_async(show())


def cmd_apikey_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from engine.auth import revoke_api_key  # lazy: the database driver

    async def revoke() -> int:
        revoked = await _with_engine(settings, lambda db: revoke_api_key(db, args.prefix))
        if not revoked:
            print(f"no live API key with prefix {args.prefix!r}", file=sys.stderr)
            return 1
        print(f"revoked API key {args.prefix} (API processes forget it within 5 s)")
        return 0

    return _run_async(revoke())


async def _with_engine(settings: Settings, use: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``use`` with a one-connection engine that is disposed of afterwards."""
    from engine.store.database import create_engine  # lazy: the database driver

    db = create_engine(settings, pool_size=1)
    try:
        return await use(db)
    finally:
        await db.dispose()


def _run_async(coro: Coroutine[Any, Any, int | None]) -> int:
    result = uvloop.run(coro)
    return result if isinstance(result, int) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor: state-machine workflows for commerce, durable on PostgreSQL "
        "and driven by Kafka. Settings come from CONVEYOR_* environment variables "
        "(see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "api",
        help="serve the HTTP API",
        description="Serve the HTTP API on CONVEYOR_HTTP_HOST:CONVEYOR_HTTP_PORT with "
        "CONVEYOR_HTTP_WORKERS processes. Scale it independently of the workers.",
    )
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "worker",
        help="run a worker: Kafka consumer, timer scheduler, outbox relay",
        description="Run one worker process: it consumes workflow events from Kafka in "
        "the consumer group CONVEYOR_CONSUMER_GROUP, fires due timers and relays the "
        "outbox to Kafka. Run several for more throughput; partitions are shared.",
    )
    p.add_argument(
        "--services",
        metavar="LIST",
        help="comma-separated services to run: consumer, relay, scheduler (due timers and "
        "bulk jobs), retention (default: CONVEYOR_WORKER_SERVICES, else all); e.g. run the "
        "relay on its own with "
        "--services relay and the consumers with --services consumer,scheduler,retention",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "dev",
        help="API and worker in one process, for local use",
        description="Serve the API and run a worker in the same process: the quickest "
        "way to try Conveyor locally (make run). Not for production.",
    )
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser(
        "migrate",
        help="apply database migrations",
        description="Apply the Alembic migrations to CONVEYOR_DATABASE_URL (and "
        "CONVEYOR_DATABASE_SCHEMA when set). Safe to run from several processes at once.",
    )
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("apikey", help="manage API keys", description="Manage HTTP API keys.")
    keys = p.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    p = keys.add_parser(
        "create",
        help="create a key and print it once",
        description="Create an API key and print it (only its SHA-256 is stored). Scopes "
        "nest: admin includes write, write includes read.",
    )
    p.add_argument("--name", required=True, help="who or what uses the key")
    p.add_argument("--scopes", default="read", help="comma-separated: read, write, admin")
    p.set_defaults(func=cmd_apikey_create)
    p = keys.add_parser("list", help="list keys (prefix, name, scopes; never secrets)")
    p.set_defaults(func=cmd_apikey_list)
    p = keys.add_parser(
        "revoke",
        help="revoke a key by its prefix",
        description="Revoke the key with this prefix (the 8 hex digits after cvk_).",
    )
    p.add_argument("prefix", help="the key's prefix, as `apikey list` shows it")
    p.set_defaults(func=cmd_apikey_revoke)
    register_deadletters(sub)
    register_schedules(sub)
    register_check(sub)

    p = sub.add_parser(
        "emit",
        help="publish a CloudEvent to a worker topic",
        description="Publish one CloudEvent (for demos and operators) and wait for the "
        "broker's acknowledgement. KEY is the business key: the CloudEvent subject and the "
        "Kafka message key. The topic defaults to CONVEYOR_TOPIC_PREFIX.in.",
    )
    p.add_argument("type", metavar="TYPE", help="CloudEvent type, e.g. order.placed")
    p.add_argument("--key", required=True, help="business key (subject and message key)")
    p.add_argument("--data", default="{}", help="JSON object: the event's data (default {})")
    p.add_argument("--topic", help="topic (default: CONVEYOR_TOPIC_PREFIX.in)")
    p.add_argument("--binary", action="store_true", help="binary mode (ce_* headers)")
    p.add_argument("--id", help="CloudEvent id (default: a new UUID); reuse it to test dedupe")
    p.add_argument("--source", default="conveyor/cli", help="CloudEvent source")
    p.set_defaults(func=cmd_emit)
    cli_instances.add_parser(sub)
    return parser


def _settings_or_none() -> Settings | None:
    """The environment's settings; or, when some are invalid, ``None`` after one line on
    stderr per bad ``CONVEYOR_*`` variable (no pydantic traceback)."""
    try:
        return Settings()
    except ValidationError as exc:
        for line in describe_invalid(exc):
            print(f"conveyor: invalid setting {line}", file=sys.stderr)
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        print(f"conveyor: invalid settings: {exc}", file=sys.stderr)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings_or_none()
    if settings is None:
        return 2
    configure_logging(settings)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return func(args, settings)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
