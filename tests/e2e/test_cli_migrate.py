"""``conveyor instances migrate`` as an operator runs it, against the test's schema: the dry
run's report (text and JSON) and exit statuses, bad input, the confirmation, an apply with
``--yes`` followed to the end with the progress bar, ``--detach``, and ``instances job``
showing a migration job."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import migrate
from engine.model import Event
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from tests.e2e.http_support import free_port, process_env

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120.0
MODULES = "workflows,tests.evolution_flows"
WORKFLOW = "test.parcel"
FULL_BAR = "[##############################]"


def conveyor(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``conveyor ARGS`` (as ``python -m engine.cli``, from the repository, so that the
    test workflows import) against the test's schema."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env=process_env(settings, free_port(), CONVEYOR_WORKFLOW_MODULES=MODULES),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


async def migrate_cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        conveyor, settings, "instances", "migrate", WORKFLOW, "--from", "1", "--to", "2", *args
    )


@pytest.fixture
def parcels(db: AsyncEngine, settings: Settings) -> Runtime:
    return Runtime(db, load_workflows(MODULES.split(",")), topic_prefix=settings.topic_prefix)


async def parcel(runtime: Runtime, key: str, *events: tuple[str, dict[str, Any]]) -> uuid.UUID:
    started = await runtime.start(WORKFLOW, key, {"key": key}, version=1)
    for n, (event_type, payload) in enumerate(events):
        outcome = await runtime.send(
            Event(
                type=event_type,
                event_id=f"{key}-{n}",
                payload=payload,
                workflow=WORKFLOW,
                business_key=key,
            )
        )
        assert outcome.status == "applied", outcome
    return started.instance.id


async def four_parcels(runtime: Runtime) -> dict[str, uuid.UUID]:
    """ok (paid 50, packing), diverges (paid 5: v2's guard refuses it), unmapped (in
    manual_review), invalid_data (its key starts with bad-)."""
    paid = ("parcel.paid", {"amount": 50})
    return {
        "good": await parcel(runtime, "good-1", paid, ("parcel.packing", {})),
        "cheap": await parcel(runtime, "cheap-1", ("parcel.paid", {"amount": 5})),
        "flagged": await parcel(runtime, "flagged-1", ("parcel.flagged", {})),
        "bad": await parcel(runtime, "bad-1", paid),
    }


async def count(db: AsyncEngine, sql: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_a_dry_run_prints_the_counts_and_a_table_and_exits_1_when_some_are_not_ok(
    settings: Settings, db: AsyncEngine, parcels: Runtime
) -> None:
    made = await four_parcels(parcels)

    dry = await migrate_cli(settings, "--dry-run")

    assert dry.returncode == 1, dry.stderr
    assert f"{FULL_BAR} 4/4 judged" in dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == (
        "test.parcel v1 -> v2 (test.parcel-v1-to-v2): 4 instances selected, 1 would migrate"
    )
    counts = {line.split()[0]: line.split()[1] for line in lines[1:5]}
    assert counts == {"ok": "1", "diverges": "1", "unmapped": "1", "invalid_data": "1"}
    assert lines[5] == ""
    assert lines[6].split() == [
        "INSTANCE",
        "BUSINESS",
        "KEY",
        "FROM",
        "->",
        "TO",
        "OUTCOME",
        "WHERE",
        "WHY",
    ]
    rows = {line.split()[1]: line for line in lines[7:]}
    assert set(rows) == {"cheap-1", "flagged-1", "bad-1"}
    assert rows["cheap-1"].startswith(str(made["cheap"]))
    assert "paid -> paid" in rows["cheap-1"]
    assert "diverges" in rows["cheap-1"]
    assert "revision 2 parcel.paid" in rows["cheap-1"]
    assert "rejected" in rows["cheap-1"]
    assert "manual_review -> (none)" in rows["flagged-1"]
    assert "is not migratable" in rows["flagged-1"]
    assert "invalid_data" in rows["bad-1"]
    assert "currency" in rows["bad-1"]
    assert await count(db, "select count(*) from jobs") == 0

    packing = await migrate_cli(settings, "--dry-run", "--state", "packing")
    assert packing.returncode == 0, packing.stderr
    assert "1 instances selected, 1 would migrate" in packing.stdout
    forced = await migrate_cli(settings, "--dry-run", "--state", "paid", "--force")
    assert forced.returncode == 1  # still not every one is ok
    assert "2 instances selected, 1 would migrate" in forced.stdout  # bad-1's data is invalid


async def test_a_dry_run_prints_the_report_as_json(settings: Settings, parcels: Runtime) -> None:
    made = await four_parcels(parcels)
    args = ("--dry-run", "--json", "--key-prefix", "cheap", "--status", "active")
    dry = await migrate_cli(settings, *args)
    assert dry.returncode == 1, dry.stderr
    report = orjson.loads(dry.stdout)
    assert (report["selected"], report["would_migrate"]) == (1, 0)
    assert report["counts"] == {"ok": 0, "diverges": 1, "unmapped": 0, "invalid_data": 0}
    (cheap,) = report["instances"]
    assert (cheap["instance_id"], cheap["outcome"]) == (str(made["cheap"]), "diverges")
    by_id = await migrate_cli(
        settings, "--dry-run", "--json", "--id", str(made["good"]), "--id", str(made["bad"])
    )
    assert orjson.loads(by_id.stdout)["counts"]["ok"] == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--to", "3"), "no migration of test.parcel from v1 to v3"),
        (("--state", "nowhere"), "declares no state 'nowhere'"),
        (("--id", "x"), "ids"),
        (("--key-prefix", ""), "business_key_prefix"),
    ],
)
async def test_bad_input_exits_2(settings: Settings, args: tuple[str, ...], says: str) -> None:
    for mode in (("--dry-run",), ("--yes",)):
        result = await migrate_cli(settings, *mode, *args)
        assert result.returncode == 2, result
        assert says in result.stderr
        assert "Traceback" not in result.stderr


async def test_usage_errors_exit_2(settings: Settings) -> None:
    for args in (
        ("instances", "migrate", WORKFLOW, "--to", "2"),
        ("instances", "migrate", WORKFLOW, "--from", "one", "--to", "2"),
        ("instances", "migrate", WORKFLOW, "--from", "1", "--to", "2", "--status", "asleep"),
    ):
        result = await asyncio.to_thread(conveyor, settings, *args)
        assert result.returncode == 2, result
    unknown = await asyncio.to_thread(
        conveyor, settings, "instances", "migrate", "nope", "--from", "1", "--to", "2"
    )
    assert unknown.returncode == 2
    assert "no migration of nope" in unknown.stderr


async def test_migrating_asks_then_applies_the_job_with_a_progress_bar(
    settings: Settings, db: AsyncEngine, parcels: Runtime
) -> None:
    made = await four_parcels(parcels)
    # No terminal and no --yes: refused, nothing created.
    refused = await migrate_cli(settings, stdin="y\n")
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert "4 instances selected, 1 would migrate" in refused.stderr
    assert await count(db, "select count(*) from jobs") == 0

    done = await migrate_cli(settings, "--yes")

    assert done.returncode == 0, done.stderr
    assert f"{FULL_BAR} 4/4 judged" in done.stderr
    assert f"{FULL_BAR} 4/4 succeeded 1 skipped 3 failed 0" in done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.endswith("completed: 1 migrated, 3 skipped, 0 failed")
    good = await parcels.get(made["good"])
    assert (good.version, good.state, good.data["currency"]) == (2, "picking", "EUR")
    cheap = await parcels.get(made["cheap"])
    assert (cheap.version, cheap.state) == (1, "paid")

    job_id = last.split()[1]
    shown = await asyncio.to_thread(conveyor, settings, "instances", "job", job_id)
    assert shown.returncode == 0, shown.stderr
    job = orjson.loads(shown.stdout)
    assert (job["migration"], job["status"], job["succeeded"]) == (
        "test.parcel-v1-to-v2",
        "completed",
        1,
    )
    assert len(job["skipped_items"]) == 3
    assert (
        "no bulk or migration job"
        in (
            await asyncio.to_thread(conveyor, settings, "instances", "job", str(uuid.uuid4()))
        ).stderr
    )

    # Again: the migrated one is on v2 now, the others still do not migrate.
    again = await migrate_cli(settings, "--yes")
    assert again.returncode == 1
    assert "no instance would migrate" in again.stderr
    nothing = await migrate_cli(settings, "--yes", "--key-prefix", "zzz")
    assert (nothing.returncode, "nothing to do" in nothing.stderr) == (0, True)


async def test_a_detached_forced_migration_is_left_to_the_workers(
    settings: Settings, parcels: Runtime
) -> None:
    await four_parcels(parcels)
    detached = await migrate_cli(settings, "--state", "paid", "--force", "--yes", "--detach")
    assert detached.returncode == 0, detached.stderr
    job = await migrate.get(parcels, uuid.UUID(detached.stdout.strip()))
    assert (job.status, job.total, job.spec["force"]) == ("running", 2, True)
