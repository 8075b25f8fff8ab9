"""``conveyor deadletters list|show|replay|discard`` as an operator runs them: exit 0 when
done, 1 with one line on stderr when refused, 2 for usage errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store import dead_letters as store
from tests.dead_letter_support import cloud_event, dead_letter, stored
from tests.e2e.http_support import order_data
from tests.e2e.test_cli_process import CONVEYOR, DEADLINE


def deadletters(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": settings.database_url,
        "CONVEYOR_DATABASE_SCHEMA": settings.database_schema or "",
        "CONVEYOR_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [CONVEYOR, "deadletters", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


async def test_list_show_replay_and_discard_from_the_command_line(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    runtime = Runtime(
        db, load_workflows(settings.workflow_modules), topic_prefix=settings.topic_prefix
    )
    await runtime.start("order", "C-1", order_data("C-1"))
    topic = f"{settings.topic_prefix}.in"
    bad = await stored(
        db,
        dead_letter(
            topic,
            cloud_event("c-1", "payment.initiated", "C-1", {"provider": ""}),
            "invalid_payload",
        ),
    )
    noise = await stored(
        db, dead_letter(topic, cloud_event("c-2", "order.teleported", "C-2", {}), "unknown_type")
    )
    binary = await stored(db, dead_letter(topic, None, "undecodable", value=b"\xff\x00"))

    listed = deadletters(settings, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "id", "first", "seen", "reason", "workflow", "business", "key", "event", "type", "status"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == [str(binary.id), str(noise.id), str(bad.id)]
    assert lines[3].split()[3:] == [
        "invalid_payload",
        "order",
        "C-1",
        "payment.initiated",
        "pending",
    ]
    only = deadletters(settings, "list", "--reason", "unknown_type", "--limit", "1")
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == [str(noise.id)]
    paged = deadletters(settings, "list", "--limit", "2")
    assert paged.stderr.strip() == f"more: --cursor {noise.id}"
    rest = deadletters(settings, "list", "--cursor", str(noise.id))
    assert [line.split()[0] for line in rest.stdout.splitlines()[1:]] == [str(bad.id)]

    shown = deadletters(settings, "show", str(bad.id))
    assert shown.returncode == 0, shown.stderr
    assert f"id:             {bad.id}" in shown.stdout
    assert (bad.value or b"").decode() in shown.stdout
    assert "content-type: application/cloudevents+json" in shown.stdout
    raw = deadletters(settings, "show", str(binary.id))
    assert "value (base64):\n/wA=" in raw.stdout

    as_is = deadletters(settings, "replay", str(bad.id))
    assert as_is.returncode == 1
    assert len(as_is.stderr.splitlines()) == 1
    assert as_is.stderr.startswith("conveyor deadletters replay: order v1: invalid payload")
    assert as_is.stderr.rstrip().endswith("(invalid_payload)")

    fix = tmp_path / "data.json"
    fix.write_bytes(orjson.dumps({"payment_id": "p-1", "provider": "card"}))
    replayed = deadletters(settings, "replay", str(bad.id), "--data-file", str(fix))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith(f"replayed dead letter {bad.id}: applied event c-1")
    assert replayed.stdout.rstrip().endswith("(placed -> payment_pending)")
    assert (await runtime.find("order", "C-1")).state == "payment_pending"
    letter = await store.get_one(db, bad.id)
    assert letter is not None
    assert letter.status == "replayed"
    assert (letter.resolved_by or "").startswith("cli:")

    again = deadletters(settings, "replay", str(bad.id))
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        f"conveyor deadletters replay: dead letter {bad.id} is replayed already "
        f"(by request {letter.resolved_by})"
    ]
    discarded = deadletters(settings, "discard", str(noise.id), "--reason", "noise")
    assert discarded.returncode == 0, discarded.stderr
    assert discarded.stdout == f"discarded dead letter {noise.id}\n"
    assert deadletters(settings, "discard", str(noise.id)).returncode == 1
    missing = deadletters(settings, "show", str(binary.id + 100))
    assert (missing.returncode, missing.stderr) == (
        1,
        f"conveyor deadletters show: no dead letter {binary.id + 100}\n",
    )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env_free = Settings()
    assert deadletters(env_free, "list", "--limit", "0").returncode == 2
    assert deadletters(env_free, "show", "abc").returncode == 2
    assert (
        deadletters(env_free, "replay", "1", "--value-file", "a", "--data-file", "b").returncode
        == 2
    )
    not_json = tmp_path / "v.json"
    not_json.write_text("{nope")
    bad_file = deadletters(env_free, "replay", "1", "--value-file", str(not_json))
    assert bad_file.returncode == 2
    assert bad_file.stderr.startswith("conveyor deadletters replay: --value-file:")
    missing = deadletters(env_free, "replay", "1", "--data-file", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    since = deadletters(env_free, "list", "--since", "yesterday")
    assert since.returncode == 2
    assert since.stderr == (
        "conveyor deadletters list: --since: 'yesterday' is not an ISO 8601 date-time\n"
    )
