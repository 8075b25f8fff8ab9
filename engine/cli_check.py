"""``conveyor check``, and the same check when ``api``, ``worker`` and ``dev`` start.

Lists the live instances (active, retrying, failed) whose workflow, version or state the
loaded registry (CONVEYOR_WORKFLOW_MODULES) no longer defines, grouped and counted; such
instances cannot take events. Exit status: 0 all defined, 1 orphans found, 2 the workflow
modules do not load.

At start, the services refuse to run (the report on stderr, exit 1) unless
CONVEYOR_ALLOW_ORPHANS=true, which logs the report as a warning instead. A database that
cannot be reached does not stop them (they wait for it anyway): the check is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from engine.errors import ConfigurationError
from engine.observability import get_logger
from engine.orphans import ALL_DEFINED, Orphan, find_orphans, format_report
from engine.registry import Registry, load_workflows
from engine.settings import Settings

log = get_logger("conveyor.check")
# The start's check waits this long for PostgreSQL, then lets the service start.
START_TIMEOUT_SECONDS = 10.0


async def orphans_in_database(settings: Settings, registry: Registry) -> list[Orphan]:
    """The orphans of ``registry`` among the database's live instances."""
    # lazy: the database driver
    from engine.store.database import create_engine
    from engine.store.orphans import live_counts

    db = create_engine(settings, pool_size=1)
    try:
        return find_orphans(registry, await live_counts(db))
    finally:
        await db.dispose()


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        registry = load_workflows(settings.workflow_modules)
    except ConfigurationError as exc:
        print(f"conveyor check: {exc}", file=sys.stderr)
        return 2
    try:
        orphans = uvloop.run(orphans_in_database(settings, registry))
    except Exception as exc:
        if not _unreachable(exc):
            raise
        print(f"conveyor check: cannot reach the database: {type(exc).__name__}", file=sys.stderr)
        return 2
    if not orphans:
        print(ALL_DEFINED)
        return 0
    for line in format_report(orphans):
        print(line)
    return 1


def start_check(settings: Settings, command: str) -> bool:
    """Whether ``conveyor <command>`` may start: no orphans, or CONVEYOR_ALLOW_ORPHANS.

    Refusing prints the report on stderr. Workflow modules that do not load, a database
    that does not answer (within START_TIMEOUT_SECONDS) or has no instances table yet are
    left to the service itself (it reports the first, waits for the second and its
    readiness shows the third): a warning, and the service starts."""
    try:
        registry = load_workflows(settings.workflow_modules)
    except ConfigurationError:
        return True
    try:
        orphans = uvloop.run(
            asyncio.wait_for(orphans_in_database(settings, registry), START_TIMEOUT_SECONDS)
        )
    except Exception as exc:  # the service reports (or waits out) what is wrong itself
        why = "database unreachable" if _unreachable(exc) else "cannot read the instances"
        log.warning(f"orphan check skipped: {why}", error=f"{type(exc).__name__}: {exc}")
        return True
    if not orphans:
        return True
    report = format_report(orphans)
    if settings.allow_orphans:
        log.warning(
            "live instances are not defined by the loaded workflows; starting anyway "
            "(CONVEYOR_ALLOW_ORPHANS=true): their events are refused as orphaned",
            orphans=report,
        )
        return True
    print(
        f"conveyor {command}: live instances are not defined by the loaded workflows "
        "(deploy their definitions, or set CONVEYOR_ALLOW_ORPHANS=true to start anyway):",
        file=sys.stderr,
    )
    for line in report:
        print(f"  {line}", file=sys.stderr)
    return False


def _unreachable(exc: BaseException) -> bool:
    from engine.transient import is_database_unavailable  # lazy: the drivers

    return isinstance(exc, TimeoutError | OSError) or is_database_unavailable(exc)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check`` to the ``conveyor`` parser."""
    p = sub.add_parser(
        "check",
        help="list live instances whose workflow, version or state is not defined",
        description="List the live instances (active, retrying, failed) whose workflow, "
        "version or state is not defined by CONVEYOR_WORKFLOW_MODULES, grouped and counted. "
        "Exit status: 0 all defined, 1 some are not, 2 the workflow modules do not load or "
        "the database cannot be reached.",
    )
    p.set_defaults(func=cmd_check)


__all__ = ["cmd_check", "orphans_in_database", "register", "start_check"]
