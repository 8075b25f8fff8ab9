"""Schedules over HTTP and the command line against a real ``conveyor api`` process (and
the CLI as a process), with the README's schedules loaded (docs/schedules_example.py):
listing, one schedule, pause and resume, a manual trigger that starts the nightly
reconciliation with an id of its own, the ticks, who may do what, and the errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from tests.e2e.http_support import Keys, make_keys, process_env, serve_process

MODULES = "workflows,docs.schedules_example"


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    with serve_process(settings, CONVEYOR_WORKFLOW_MODULES=MODULES) as (base, _proc):
        yield base


def call(base: str, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, base + path, headers={"Authorization": f"Bearer {key}"}, timeout=10, **kwargs
    )


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = process_env(settings, 0, CONVEYOR_WORKFLOW_MODULES=MODULES)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "schedules", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_list_show_pause_resume_and_trigger_over_http(api: str, settings: Settings) -> None:
    keys: Keys = await make_keys(settings)
    listed = call(api, keys.read, "GET", "/v1/schedules")
    assert listed.status_code == 200, listed.text
    by_name = {s["name"]: s for s in listed.json()["items"]}
    assert sorted(by_name) == ["nightly-reconciliation", "wave-release"]
    nightly = by_name["nightly-reconciliation"]
    assert (nightly["cron"], nightly["timezone"], nightly["target"]) == (
        "30 2 * * *",
        "Europe/Berlin",
        "start payment.reconciliation",
    )
    assert (nightly["paused"], nightly["missed"]) == (False, "latest")
    assert datetime.fromisoformat(nightly["next_tick"]) > datetime.now(UTC)
    wave = by_name["wave-release"]
    assert (wave["every_seconds"], wave["event_type"]) == (900.0, "warehouse.wave_release_due")

    # Operator actions need the admin scope.
    for action in ("pause", "resume", "trigger"):
        refused = call(api, keys.write, "POST", f"/v1/schedules/nightly-reconciliation/{action}")
        assert refused.status_code == 403, refused.text

    paused = call(api, keys.admin, "POST", "/v1/schedules/nightly-reconciliation/pause")
    assert (paused.status_code, paused.json()["paused"]) == (200, True)
    again = call(api, keys.admin, "POST", "/v1/schedules/nightly-reconciliation/pause")
    assert again.json()["paused"] is True  # idempotent

    # A trigger works while paused and has an id of its own.
    fired = call(api, keys.admin, "POST", "/v1/schedules/nightly-reconciliation/trigger")
    assert fired.status_code == 201, fired.text
    tick = fired.json()
    assert tick["manual"] is True
    assert tick["outcome"] == "started"
    assert tick["tick_id"].startswith("nightly-reconciliation@manual:")
    assert tick["business_key"].startswith("reconcile-")
    instance = call(api, keys.read, "GET", f"/v1/instances/{tick['instance_id']}").json()
    assert (instance["workflow"], instance["state"]) == ("payment.reconciliation", "waiting")
    assert instance["business_key"] == tick["business_key"]
    # The same night's key again: another start holds it, so the second is a conflict.
    second = call(api, keys.admin, "POST", "/v1/schedules/nightly-reconciliation/trigger")
    assert second.status_code == 201, second.text
    assert second.json()["outcome"] == "conflict"
    assert second.json()["tick_id"] != tick["tick_id"]

    ticks = call(api, keys.read, "GET", "/v1/schedules/nightly-reconciliation/ticks?limit=1")
    assert ticks.status_code == 200, ticks.text
    page = ticks.json()
    assert [t["tick_id"] for t in page["items"]] == [second.json()["tick_id"]]
    rest = call(
        api,
        keys.read,
        "GET",
        f"/v1/schedules/nightly-reconciliation/ticks?cursor={page['next_cursor']}",
    ).json()
    assert [t["tick_id"] for t in rest["items"]] == [tick["tick_id"]]

    resumed = call(api, keys.admin, "POST", "/v1/schedules/nightly-reconciliation/resume")
    assert (resumed.status_code, resumed.json()["paused"]) == (200, False)
    one = call(api, keys.read, "GET", "/v1/schedules/nightly-reconciliation").json()
    assert one["paused"] is False
    assert one["last_outcome"] == "conflict"


async def test_unknown_schedules_and_parameters_are_problems(api: str, settings: Settings) -> None:
    keys = await make_keys(settings)
    for method, path in (
        ("GET", "/v1/schedules/no-such"),
        ("GET", "/v1/schedules/no-such/ticks"),
        ("POST", "/v1/schedules/no-such/pause"),
        ("POST", "/v1/schedules/no-such/trigger"),
    ):
        got = call(api, keys.admin, method, path)
        assert got.status_code == 404, (path, got.text)
        assert got.headers["content-type"].startswith("application/problem+json")
    bad = call(api, keys.read, "GET", "/v1/schedules?foo=1")
    assert bad.status_code == 400
    assert "foo" in bad.text
    limit = call(api, keys.read, "GET", "/v1/schedules/wave-release/ticks?limit=0")
    assert limit.status_code == 400
    assert call(api, "cvk_nope", "GET", "/v1/schedules").status_code == 401


async def test_the_command_line_lists_pauses_resumes_and_triggers(settings: Settings) -> None:
    from engine.store.migrations import upgrade

    await upgrade(settings)
    listed = cli(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert "nightly-reconciliation" in listed.stdout
    assert "30 2 * * * (Europe/Berlin)" in listed.stdout
    paused = cli(settings, "pause", "wave-release")
    assert paused.returncode == 0, paused.stderr
    assert "wave-release: paused" in paused.stdout
    fired = cli(settings, "trigger", "wave-release")
    assert fired.returncode == 0, fired.stderr
    assert fired.stdout.startswith("fired wave-release@manual:")
    assert "published" in fired.stdout
    shown = cli(settings, "show", "wave-release", "--json")
    assert shown.returncode == 0, shown.stderr
    import json

    body = json.loads(shown.stdout)
    assert body["paused"] is True
    assert [t["outcome"] for t in body["ticks"]] == ["published"]
    resumed = cli(settings, "resume", "wave-release")
    assert "wave-release: running" in resumed.stdout
    missing = cli(settings, "show", "no-such")
    assert missing.returncode == 1
    assert "no schedule named 'no-such'" in missing.stderr
