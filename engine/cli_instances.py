"""``conveyor instances cancel|retry|job``: bulk actions from the command line.

Like ``conveyor apikey``, these talk to the database directly (CONVEYOR_DATABASE_URL). A
bulk command shows how many instances the filter matches, asks for confirmation (``--yes``
skips it; without a terminal and without ``--yes`` it refuses), creates the job and then
applies it batch by batch itself while showing the progress, alongside any running
workers (batches are claimed with SKIP LOCKED, so they share the job safely). Interrupted,
the job goes on in the workers; ``--detach`` only creates it. Exit status: 0 when the job
completed with no failed item, 1 otherwise, 2 for a bad filter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import uvloop

from engine import cli_migrate
from engine.cli_confirm import confirmed
from engine.errors import ConveyorError, InvalidRequest
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.bulk import Action, BulkRequest
    from engine.runtime import Runtime
    from engine.store.jobs import Job

BAR_WIDTH = 30
IDLE_POLL_SECONDS = 0.2
"""How often the progress is read while other runners hold the job's remaining items."""


def add_parser(sub: Any) -> None:
    """Add ``instances`` and its actions to the ``conveyor`` parser's subcommands."""
    p = sub.add_parser(
        "instances",
        help="bulk actions on instances: cancel, retry, migrate; show a job",
        description="Cancel or retry every instance a filter selects, as a durable job "
        "(the same as POST /v1/bulk), migrate running instances to another version of their "
        "workflow, or show a job.",
    )
    actions = p.add_subparsers(dest="instances_command", required=True, metavar="ACTION")
    for action, text in (
        ("cancel", "cancel the instances the filter selects"),
        ("retry", "retry the failed (or retrying) instances the filter selects"),
    ):
        a = actions.add_parser(action, help=text, description=f"{text[0].upper()}{text[1:]}.")
        a.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a filter of GET /v1/instances, e.g. workflow=order, status=failed, "
            "state=packed, in_state_longer_than=PT2H, sla_breached=true, "
            "business_key_prefix=2026-, data.customer_id=C-7, ids=ID,ID; repeat to combine",
        )
        a.add_argument("--all", action="store_true", help="allow an empty filter: every instance")
        if action == "cancel":
            a.add_argument("--reason", default="", help="why; recorded in each history")
            a.add_argument(
                "--status-only",
                action="store_true",
                help="skip the workflows' cancel routes: only set the status",
            )
        a.add_argument("--dry-run", action="store_true", help="only count and show a sample")
        a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        a.add_argument(
            "--detach", action="store_true", help="create the job, print its id and return"
        )
        a.set_defaults(func=cmd_bulk, action=action)
    cli_migrate.add_parser(actions, follow=_follow, open_runtime=_runtime)
    j = actions.add_parser(
        "job", help="show a bulk or migration job", description="Show a job as JSON."
    )
    j.add_argument("job_id", metavar="ID", help="the job id")
    j.set_defaults(func=cmd_job)


def filter_arguments(pairs: list[str], everything: bool) -> dict[str, Any]:
    """``["workflow=order", "data.customer_id=C-7"]`` as a filter object (``data.*`` nested
    under ``data``, ``ids`` split at commas)."""
    raw: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidRequest(f"--filter {pair!r}: write NAME=VALUE")
        if name.startswith("data."):
            node = raw.setdefault("data", {})
            *parents, leaf = name.removeprefix("data.").split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise InvalidRequest(f"--filter {pair!r}: conflicts with another data filter")
            node[leaf] = value
        elif name == "ids":
            raw["ids"] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            raw[name] = value
    if everything:
        raw["all"] = True
    return raw


def cmd_bulk(args: argparse.Namespace, settings: Settings) -> int:
    return uvloop.run(_bulk(args, settings))


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    return uvloop.run(_show_job(args, settings))


async def _bulk(args: argparse.Namespace, settings: Settings) -> int:
    # lazy: the database driver and the runtime, for these commands only
    from engine import bulk

    command = f"conveyor instances {args.action}"
    runtime = _runtime(settings)
    try:
        try:
            request = _request(args)
            preview = await bulk.preview(runtime, request)
        except ConveyorError as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            return 2
        print(f"{preview.count:,} instances match", file=sys.stderr)
        for instance in preview.sample:
            print(
                f"  {instance.id}  {instance.workflow} v{instance.version}  "
                f"{instance.business_key}  {instance.state}  {instance.status.value}",
                file=sys.stderr,
            )
        if preview.count > len(preview.sample):
            print(f"  ... and {preview.count - len(preview.sample):,} more", file=sys.stderr)
        if args.dry_run:
            print(preview.count)
            return 0
        if preview.count == 0:
            print("nothing to do", file=sys.stderr)
            return 0
        question = f"{args.action} {preview.count:,} instances?"
        hint = f"{args.action} without asking"
        if not await confirmed(command, question, yes=args.yes, flag_hint=hint):
            return 1
        try:
            job, _ = await bulk.create(runtime, request, request_id=f"cli-{uuid.uuid4().hex}")
        except ConveyorError as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            return 2
        print(f"created job {job.id} ({job.total:,} instances)", file=sys.stderr)
        if args.detach:
            print(job.id)
            return 0
        job = await _follow(runtime, job)
        print(
            f"job {job.id} {job.status}: {job.succeeded:,} succeeded, {job.skipped:,} skipped, "
            f"{job.failed:,} failed"
        )
        return 0 if job.status == "completed" and job.failed == 0 else 1
    finally:
        await runtime.db.dispose()


def _request(args: argparse.Namespace) -> BulkRequest:
    from engine import bulk  # lazy: see _bulk

    action: Action = args.action
    return bulk.BulkRequest(
        action=action,
        filter=bulk.parse_filter(filter_arguments(args.filter, args.all), texts=True),
        reason=getattr(args, "reason", ""),
        status_only=getattr(args, "status_only", False),
    )


async def _follow(
    runtime: Runtime,
    job: Job,
    get: Callable[[Runtime, uuid.UUID], Awaitable[Job]] | None = None,
) -> Job:
    """Apply the job's batches here (workers may share them) and show the progress until
    it finishes. A batch that fails for a reason of its own is tried again; after
    :data:`engine.bulk_runner.MAX_BATCH_ERRORS` in a row the job is marked failed, as a
    worker would, and this says why (the command then exits 1). ``get`` reads the job
    (default :func:`engine.bulk.get`; a migration job: :func:`engine.migrate.get`)."""
    from engine import bulk  # lazy: see _bulk
    from engine.bulk_runner import JobRunner
    from engine.transient import is_transient

    runner = JobRunner(runtime)
    while True:
        try:
            claimed = await runner.run_batch_or_give_up(job)
        except Exception as exc:
            if is_transient(exc):
                raise
            # Counted: the batch is tried again, and the job is marked failed (as a
            # worker would) once MAX_BATCH_ERRORS batches in a row have failed.
            sys.stderr.write(f"\nbatch failed: {type(exc).__name__}: {exc}\n")
            claimed = 0
        job = await (get or bulk.get)(runtime, job.id)
        sys.stderr.write("\r" + progress_bar(job))
        sys.stderr.flush()
        if job.status != "running":
            sys.stderr.write("\n")
            if job.status == "failed":
                error = (job.error or {}).get("error", "unknown error")
                sys.stderr.write(f"job failed: {error}\n")
            return job
        if not claimed:
            await asyncio.sleep(IDLE_POLL_SECONDS)


def progress_bar(job: Job) -> str:
    """``[#####.....] 2,500/5,000 succeeded 2,400 skipped 100 failed 0``."""
    filled = BAR_WIDTH if job.total == 0 else BAR_WIDTH * job.done // job.total
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {job.done:,}/{job.total:,} "
        f"succeeded {job.succeeded:,} skipped {job.skipped:,} failed {job.failed:,}"
    )


async def _show_job(args: argparse.Namespace, settings: Settings) -> int:
    from engine import bulk, migrate  # lazy: see _bulk
    from engine.store import jobs

    try:
        job_id = uuid.UUID(args.job_id)
    except ValueError:
        print(f"conveyor instances job: {args.job_id!r} is not a job id", file=sys.stderr)
        return 2
    runtime = _runtime(settings)
    try:
        job = await jobs.get(runtime.db, job_id)
        if job is None or job.kind not in (bulk.KIND, migrate.KIND):
            raise bulk.JobNotFound(f"no bulk or migration job {job_id}")
        shown = migrate.job_json(job) if job.kind == migrate.KIND else bulk.job_json(job)
        for status in ("failed", "skipped"):
            found = await jobs.items(runtime.db, job_id, status=status, after=None, limit=20)
            shown[f"{status}_items"] = [bulk.item_json(i) for i in found]
    except ConveyorError as exc:
        print(f"conveyor instances job: {exc}", file=sys.stderr)
        return 1
    finally:
        await runtime.db.dispose()
    print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    return 0


def _runtime(settings: Settings) -> Runtime:
    # lazy: the database driver and the workflows, for these commands only
    from engine.registry import load_workflows
    from engine.runtime import Runtime
    from engine.store.database import create_engine

    db = create_engine(settings, pool_size=2)
    return Runtime(
        db, load_workflows(settings.workflow_modules), topic_prefix=settings.topic_prefix
    )


__all__ = ["add_parser", "filter_arguments", "progress_bar"]
