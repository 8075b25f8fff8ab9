"""Declaring and deciding workflows is pure: importing the DSL, the pure step and a team's
workflows loads no database or Kafka driver and no web framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "asyncpg", "aiokafka", "sanic", "alembic")

# A fresh interpreter: this test process has long imported all of them.
PROBE = """
import sys

import engine
import engine.dsl
import engine.decide
import workflows
from engine.dsl import State, Workflow
from engine.registry import load_workflows

registry = load_workflows(["workflows"])
assert len(registry) > 0, "no workflow loaded"
print(",".join(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def test_the_dsl_and_the_workflows_load_no_driver_and_no_web_framework() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
