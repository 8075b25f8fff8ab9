"""Live instances whose definition is gone (orphans): ``conveyor check`` lists them, the
services refuse to start over them unless CONVEYOR_ALLOW_ORPHANS=true, and an event for
one answers 409 ``orphaned`` (never a 500); an operator can still cancel it.

The instances are made with the workflows as they were (:mod:`tests.orphan_flows_old`),
then looked at with the workflows as redeployed (:mod:`tests.orphan_flows`): v1 gone, and
v2 without its state ``legacy_review``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.cli_check import start_check
from engine.settings import Settings
from tests.e2e.http_support import Keys, free_port, process_env, serve_in_process, serve_process
from tests.orphan_support import NEW, OLD, Seeded, seed

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0
REPORT = [
    "test.orphan v1: 2 instances, version not deployed",
    "test.orphan v2 state 'legacy_review': 1 instance, state not declared",
]


@pytest.fixture
async def seeded(settings: Settings, db: AsyncEngine) -> Seeded:
    return await seed(settings, db)


def conveyor(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``conveyor ARGS`` (as ``python -m engine.cli``, from the repository, so that the
    test workflow modules import) against the test's schema."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env=process_env(settings, free_port(), **env),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def test_check_lists_orphans_grouped_and_counted_and_exits_1(
    settings: Settings, seeded: Seeded
) -> None:
    result = conveyor(settings, "check", CONVEYOR_WORKFLOW_MODULES=NEW)
    assert result.returncode == 1, result
    assert result.stdout.splitlines() == REPORT
    assert result.stderr == ""


def test_check_exits_0_when_every_live_instance_is_defined(
    settings: Settings, seeded: Seeded
) -> None:
    result = conveyor(settings, "check", CONVEYOR_WORKFLOW_MODULES=OLD)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == ["all live instances are defined"]


def test_check_with_workflow_modules_that_do_not_load_exits_2(settings: Settings) -> None:
    result = conveyor(settings, "check", CONVEYOR_WORKFLOW_MODULES="tests.no_such_flows")
    assert result.returncode == 2, result
    assert "workflow module 'tests.no_such_flows' not found" in result.stderr


def test_check_without_a_database_exits_2_with_one_line(settings: Settings) -> None:
    unreachable = settings.database_url.replace("127.0.0.1:5432", "127.0.0.1:9")
    result = conveyor(settings, "check", CONVEYOR_DATABASE_URL=unreachable)
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("conveyor check: cannot reach the database: ")


@pytest.mark.parametrize("command", [["api"], ["worker"], ["dev"]], ids=" ".join)
def test_services_refuse_to_start_over_orphans(
    settings: Settings, seeded: Seeded, command: list[str]
) -> None:
    result = conveyor(settings, *command, CONVEYOR_WORKFLOW_MODULES=NEW)
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"conveyor {command[0]}: live instances are not defined")
    assert "CONVEYOR_ALLOW_ORPHANS=true" in lines[0]
    assert [line.strip() for line in lines[1:]] == REPORT
    assert "Traceback" not in result.stderr


async def test_api_starts_over_orphans_when_allowed_and_refuses_their_events(
    settings: Settings, seeded: Seeded, keys: Keys
) -> None:
    with serve_process(settings, CONVEYOR_WORKFLOW_MODULES=NEW, CONVEYOR_ALLOW_ORPHANS="true") as (
        base,
        _,
    ):
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http:
            response = await http.post(
                f"/v1/instances/{seeded.v1}/events", json={"type": "orphan.poke"}
            )
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("/orphaned")


def test_an_unreachable_database_at_start_does_not_stop_a_service(
    base_settings: Settings,
) -> None:
    unreachable = base_settings.database_url.replace("127.0.0.1:5432", "127.0.0.1:9")
    assert unreachable != base_settings.database_url
    offline = base_settings.model_copy(
        update={"database_url": unreachable, "workflow_modules": [NEW]}
    )
    assert start_check(offline, "api")


@pytest.fixture
async def orphan_client(
    settings: Settings, seeded: Seeded, keys: Keys
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process, with the redeployed workflows (and orphans allowed)."""
    redeployed = settings.model_copy(update={"workflow_modules": [NEW], "allow_orphans": True})
    async with (
        serve_in_process(redeployed) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def test_an_event_for_an_orphan_is_409_orphaned_naming_what_is_missing(
    orphan_client: httpx.AsyncClient, seeded: Seeded
) -> None:
    for target, missing, detail in [
        (seeded.v1, "version", "test.orphan v1 is not deployed"),
        (seeded.legacy, "state", "test.orphan v2 does not declare state 'legacy_review'"),
    ]:
        response = await orphan_client.post(
            f"/v1/instances/{target}/events", json={"type": "orphan.poke", "id": f"e-{missing}"}
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["type"].endswith("/orphaned")
        assert body["title"] == "Instance orphaned"
        assert body["reason"] == "orphaned"
        assert body["missing"] == missing
        assert detail in body["detail"]
        # Recorded in the history, but the event id stays free for after a redeploy.
        again = await orphan_client.post(
            f"/v1/instances/{target}/events", json={"type": "orphan.poke", "id": f"e-{missing}"}
        )
        assert again.status_code == 409
        assert again.json()["type"].endswith("/orphaned")
        history = (await orphan_client.get(f"/v1/instances/{target}/history")).json()
        rejected = [h for h in history["items"] if h["event_id"] == f"e-{missing}"]
        assert [h["outcome"] for h in rejected] == ["rejected", "rejected"]
    fine = await orphan_client.post(
        f"/v1/instances/{seeded.fine}/events", json={"type": "orphan.poke"}
    )
    assert fine.status_code == 200, fine.text
    got = await orphan_client.get(f"/v1/instances/{seeded.legacy}")
    assert got.status_code == 200


async def test_retrying_a_failed_orphan_is_409_orphaned_and_changes_nothing(
    orphan_client: httpx.AsyncClient, seeded: Seeded
) -> None:
    response = await orphan_client.post(f"/v1/instances/{seeded.failed}/retry")
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["type"].endswith("/orphaned")
    assert (body["title"], body["missing"]) == ("Instance orphaned", "version")
    assert "test.orphan v1 is not deployed" in body["detail"]
    got = (await orphan_client.get(f"/v1/instances/{seeded.failed}")).json()
    assert got["status"] == "failed"


async def test_an_operator_can_cancel_an_orphan(
    orphan_client: httpx.AsyncClient, seeded: Seeded
) -> None:
    for target in (seeded.v1, seeded.failed, seeded.legacy):
        response = await orphan_client.post(f"/v1/instances/{target}/cancel", json={})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["mode"], body["instance"]["status"]) == ("status", "cancelled")
