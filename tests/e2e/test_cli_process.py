"""The `conveyor` command as an operator runs it: bad settings and a busy port fail at once,
with one line saying what is wrong, and no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CONVEYOR = str(Path(sys.executable).with_name("conveyor"))
DEADLINE = 30.0  # seconds any of these commands may take to fail


def run_conveyor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVEYOR, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


COMMANDS = [
    ["api"],
    ["dev"],
    ["worker"],
    ["migrate"],
    ["apikey", "list"],
    ["emit", "order.placed", "--key", "k-1"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_bad_settings_print_one_line_per_variable_and_exit_2(command: list[str]) -> None:
    result = run_conveyor(*command, CONVEYOR_HTTP_PORT="abc", CONVEYOR_LOG_LEVEL="LOUD")
    assert result.returncode == 2, result
    assert sorted(result.stderr.splitlines()) == [
        "conveyor: invalid setting CONVEYOR_HTTP_PORT: input should be a valid integer, "
        "unable to parse string as an integer",
        "conveyor: invalid setting CONVEYOR_LOG_LEVEL: input should be 'DEBUG', 'INFO', "
        "'WARNING' or 'ERROR'",
    ]
    assert result.stdout == ""


def test_bad_settings_messages_do_not_repeat_values_that_may_be_secret() -> None:
    result = run_conveyor(
        "api",
        CONVEYOR_DATABASE_URL="mysql://conveyor:hunter2@db.example/conveyor",
        CONVEYOR_SENTRY_TRACES_SAMPLE_RATE="2",
        CONVEYOR_WORKER_SERVICES="relay,bogus",
    )
    assert result.returncode == 2, result
    assert sorted(result.stderr.splitlines()) == [
        "conveyor: invalid setting CONVEYOR_DATABASE_URL: database_url must be a "
        "postgresql+asyncpg:// URL",
        "conveyor: invalid setting CONVEYOR_SENTRY_TRACES_SAMPLE_RATE: input should be less "
        "than or equal to 1",
        "conveyor: invalid setting CONVEYOR_WORKER_SERVICES: 'bogus': input should be "
        "'consumer', 'relay', 'scheduler' or 'retention'",
    ]
    assert "hunter2" not in result.stderr


def test_a_bad_services_option_names_the_option() -> None:
    result = run_conveyor("worker", "--services", "relay,nope")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "conveyor worker: --services: 'nope': input should be 'consumer', 'relay', "
        "'scheduler' or 'retention'"
    ]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["api", "dev"])
def test_a_port_in_use_fails_before_serving_with_one_line(busy_port: int, command: str) -> None:
    started = time.monotonic()
    result = run_conveyor(
        command, CONVEYOR_HTTP_HOST="127.0.0.1", CONVEYOR_HTTP_PORT=str(busy_port)
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        f"conveyor {command}: port {busy_port} on 127.0.0.1 is in use; stop what listens there "
        "or set CONVEYOR_HTTP_PORT to another port"
    ]
    assert "serving on" not in result.stdout
    assert elapsed < 15, "a busy port must fail at once, not after starting the server"


def test_an_address_the_host_does_not_have_is_named() -> None:
    result = run_conveyor("api", CONVEYOR_HTTP_HOST="192.0.2.1", CONVEYOR_HTTP_PORT="8000")
    assert result.returncode == 1, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("conveyor api: cannot listen on port 8000 on 192.0.2.1: "), line
