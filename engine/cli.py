"""The ``conveyor`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from engine.observability import configure_logging, get_logger
from engine.settings import Settings

log = get_logger("conveyor.cli")


def _serve_api(settings: Settings, *, with_worker: bool) -> None:
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


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    _serve_api(settings, with_worker=False)
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    _serve_api(settings, with_worker=True)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from engine.worker import run_worker

    return _run_async(run_worker(settings))


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.store.migrations import upgrade

    _run_async(upgrade(settings, args.revision))
    where = f" (schema {settings.database_schema})" if settings.database_schema else ""
    print(f"database migrated to {args.revision}{where}")
    return 0


def _run_async(coro: Coroutine[Any, Any, int | None]) -> int:
    import uvloop

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return func(args, settings)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
