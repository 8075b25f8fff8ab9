"""``conveyor instances migrate``: migrating running instances to another version of their
workflow from the command line (the same as ``POST /v1/workflows/{name}/migrations``).

Like the bulk commands (:mod:`engine.cli_instances`), it talks to the database directly.
It first judges every selected instance by replaying its history on the target version
(:func:`engine.migrate.dry_run`), with a progress bar on stderr. ``--dry-run`` then prints
the report (the counts per verdict and a table of the instances that would not simply
migrate; ``--json`` prints the report as JSON) and exits 0 when every selected instance is
``ok``, 1 otherwise. Without it, the counts are shown, the command asks for confirmation
(``--yes`` skips it; without a terminal and without ``--yes`` it refuses), creates the job
and applies it batch by batch while showing the progress, alongside any running workers.
Exit status 2 for bad input: an undeclared migration, a bad filter.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import uvloop

from engine.cli_confirm import confirmed
from engine.errors import ConveyorError
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.migrate import MigrationRequest, Report
    from engine.runtime import Runtime
    from engine.store.jobs import Job

    Follow = Callable[
        [Runtime, Job, Callable[[Runtime, uuid.UUID], Awaitable[Job]]], Awaitable[Job]
    ]
    OpenRuntime = Callable[[Settings], Runtime]

BAR_WIDTH = 30
KEY_WIDTH = 40
"""Business keys longer than this are cut in the table (the JSON report has them whole)."""
OUTCOMES = ("ok", "diverges", "unmapped", "invalid_data")
COMMAND = "conveyor instances migrate"


def add_parser(actions: Any, *, follow: Follow, open_runtime: OpenRuntime) -> None:
    """Add ``migrate`` to the ``conveyor instances`` actions. ``follow`` applies a job's
    batches while showing its progress, as the bulk commands do; ``open_runtime`` opens the
    runtime of the settings (both from :mod:`engine.cli_instances`)."""
    m = actions.add_parser(
        "migrate",
        help="migrate running instances to another version of their workflow",
        description="Judge the running instances of NAME vN by replaying their history on "
        "vM (--dry-run: report and stop), then migrate them as a durable job (the same as "
        "POST /v1/workflows/NAME/migrations). Exit status: 0 when every selected instance "
        "is ok (dry run) or the job completed with no failed item, 1 otherwise, 2 for an "
        "undeclared migration or a bad filter.",
    )
    m.add_argument("workflow", metavar="NAME", help="the workflow, e.g. order")
    m.add_argument(
        "--from", dest="from_version", type=int, required=True, metavar="N", help="source version"
    )
    m.add_argument(
        "--to", dest="to_version", type=int, required=True, metavar="M", help="target version"
    )
    m.add_argument("--dry-run", action="store_true", help="judge and report; change nothing")
    m.add_argument("--json", action="store_true", help="with --dry-run: the report as JSON")
    m.add_argument(
        "--state",
        action="append",
        dest="states",
        metavar="S",
        help="only instances in this source state (repeat for several)",
    )
    m.add_argument(
        "--status", choices=("active", "retrying", "failed"), help="only instances with it"
    )
    m.add_argument("--key-prefix", metavar="P", help="only business keys starting with P")
    m.add_argument(
        "--id", action="append", dest="ids", metavar="ID", help="only this instance (repeat)"
    )
    m.add_argument(
        "--force",
        action="store_true",
        help="migrate the instances whose replay diverges on the target too",
    )
    m.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    m.add_argument("--detach", action="store_true", help="create the job, print its id and return")
    m.set_defaults(func=cmd_migrate, follow=follow, open_runtime=open_runtime)


def filter_of(args: argparse.Namespace) -> dict[str, Any]:
    """The options as a filter object of :class:`engine.migrate.MigrationFilter`."""
    raw: dict[str, Any] = {}
    if args.states:
        raw["states"] = list(args.states)
    if args.status:
        raw["status"] = args.status
    if args.key_prefix is not None:
        raw["business_key_prefix"] = args.key_prefix
    if args.ids:
        raw["ids"] = list(args.ids)
    return raw


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    return uvloop.run(_migrate(args, settings))


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    # lazy: the database driver, the runtime and the workflows, for this command only
    from engine import migrate

    runtime = args.open_runtime(settings)
    try:
        try:
            request = _request(args)
            report = await _judge(runtime, request)
        except ConveyorError as exc:
            print(f"{COMMAND}: {exc}", file=sys.stderr)
            return 2
        shown = report.to_json(force=args.force)
        if args.dry_run:
            if args.json:
                print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
            else:
                print("\n".join(render_report(shown)))
            return 0 if shown["counts"]["ok"] == shown["selected"] else 1
        print("\n".join(render_counts(shown)), file=sys.stderr)
        if shown["selected"] == 0:
            print("nothing to do", file=sys.stderr)
            return 0
        would = shown["would_migrate"]
        if would == 0:
            print("no instance would migrate (--dry-run lists why)", file=sys.stderr)
            return 1
        question = f"migrate {would:,} instances ({report.migration.label})?"
        if not await confirmed(COMMAND, question, yes=args.yes, flag_hint="migrate without asking"):
            return 1
        try:
            job, _ = await migrate.create(runtime, request, request_id=f"cli-{uuid.uuid4().hex}")
        except ConveyorError as exc:
            print(f"{COMMAND}: {exc}", file=sys.stderr)
            return 2
        print(f"created job {job.id} ({job.total:,} instances)", file=sys.stderr)
        if args.detach:
            print(job.id)
            return 0
        job = await args.follow(runtime, job, migrate.get)
        print(
            f"job {job.id} {job.status}: {job.succeeded:,} migrated, {job.skipped:,} skipped, "
            f"{job.failed:,} failed"
        )
        return 0 if job.status == "completed" and job.failed == 0 else 1
    finally:
        await runtime.db.dispose()


def _request(args: argparse.Namespace) -> MigrationRequest:
    from engine import migrate  # lazy: see _migrate

    return migrate.MigrationRequest(
        workflow=args.workflow,
        from_version=args.from_version,
        to_version=args.to_version,
        filter=migrate.parse_filter(filter_of(args)),
        force=args.force,
    )


async def _judge(runtime: Runtime, request: MigrationRequest) -> Report:
    """The dry run, with its progress on stderr."""
    from engine import migrate  # lazy: see _migrate

    shown = False

    def progress(done: int, total: int) -> None:
        nonlocal shown
        shown = True
        sys.stderr.write("\r" + judging_bar(done, total))
        sys.stderr.flush()

    try:
        return await migrate.dry_run(runtime, request, progress=progress)
    finally:
        if shown:
            sys.stderr.write("\n")


def judging_bar(done: int, total: int) -> str:
    """``[###############...............] 500/1,000 judged``."""
    filled = BAR_WIDTH if total == 0 else BAR_WIDTH * done // total
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:,}/{total:,} judged"


def render_counts(report: dict[str, Any]) -> list[str]:
    """The report's headline and its count per verdict."""
    migration = report["migration"]
    label = (
        f"{migration['workflow']} v{migration['from_version']} -> v{migration['to_version']} "
        f"({migration['name']})"
    )
    lines = [
        f"{label}: {report['selected']:,} instances selected, "
        f"{report['would_migrate']:,} would migrate"
    ]
    width = max(len(o) for o in OUTCOMES)
    lines += [f"  {o:<{width}}  {report['counts'][o]:>9,}" for o in OUTCOMES]
    return lines


def render_report(report: dict[str, Any]) -> list[str]:
    """A dry-run report as text: the counts, then a table of the listed instances (those
    that would not simply migrate: where the replay diverges and why)."""
    lines = render_counts(report)
    listed: Sequence[dict[str, Any]] = report["instances"]
    if not listed:
        return lines
    rows = [("INSTANCE", "BUSINESS KEY", "FROM -> TO", "OUTCOME", "WHERE", "WHY")]
    for item in listed:
        key = item["business_key"]
        if len(key) > KEY_WIDTH:
            key = key[: KEY_WIDTH - 3] + "..."
        divergence = item.get("divergence")
        if divergence is not None:
            where = f"revision {divergence['revision']} {divergence['event_type']}"
            why = f"{divergence['decided']}: {divergence['reason']}"
        else:
            where, why = "-", item.get("reason") or ""
        move = f"{item['from_state']} -> {item['to_state'] or '(none)'}"
        rows.append((item["instance_id"], key, move, item["outcome"], where, why))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines.append("")
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:5], widths, strict=True)]
        lines.append("  ".join([*cells, row[5]]).rstrip())
    if report["truncated"]:
        lines.append(f"(only the first {len(listed):,} are listed)")
    return lines


__all__ = ["add_parser", "filter_of", "judging_bar", "render_counts", "render_report"]
