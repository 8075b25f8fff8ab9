"""The example alerting rules are valid, and fire when (and only when) they should.

``promtool`` comes with Debian's ``prometheus`` package; ``make test`` installs it
(ops/prometheus/install-promtool.sh), and so does this module when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.metrics import Metrics
from engine.gauges import DatabaseGauges
from engine.messaging.metrics import WorkerCollector, WorkerMetrics
from engine.slas import StateSla
from engine.store.gauges import OutboxBacklog, OverdueTimers

RULES_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
RULES = RULES_DIR / "conveyor-alerts.yml"
RULE_TESTS = RULES_DIR / "conveyor-alerts.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        subprocess.run(["sh", str(RULES_DIR / "install-promtool.sh")], check=True, timeout=600)
        found = shutil.which("promtool")
    assert found is not None, "promtool is missing: run `make promtool`"
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=RULES_DIR)


def test_promtool_accepts_the_alerting_rules(promtool: str) -> None:
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_the_alerting_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    done = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_catch_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests compare what they say: a wrong figure in an expectation fails."""
    shutil.copy(RULES, tmp_path / RULES.name)
    wrong = RULE_TESTS.read_text().replace('summary: "3 order', 'summary: "4 order')
    assert wrong != RULE_TESTS.read_text()
    (tmp_path / RULE_TESTS.name).write_text(wrong)
    done = _run(promtool, "test", "rules", str(tmp_path / RULE_TESTS.name))
    assert done.returncode != 0
    assert "ConveyorInstancesStuckPastSla" in done.stdout + done.stderr


def test_every_alert_names_metrics_that_conveyor_exports() -> None:
    """The rules only use metric names the processes serve (a renamed metric would
    silently never fire)."""
    now = datetime.now(UTC)
    gauges = DatabaseGauges(slas=[StateSla("order", 1, "paid", timedelta(hours=1))])
    gauges.outbox, gauges.timers = OutboxBacklog(1, now), OverdueTimers(1, now)
    gauges.breaches, gauges.read_at = {("order", "paid"): 1}, now
    worker = WorkerMetrics()
    worker.partition_lag[("orders", 0)] = 1
    worker.dead_lettered["invalid_payload"] += 1
    worker.schedule_ticks[("nightly", "conflict")] += 1
    exported = {
        sample.name
        for collector in (gauges, WorkerCollector(worker), Metrics().registry)
        for family in collector.collect()
        for sample in family.samples
    }
    used = set(re.findall(r"\bconveyor_[a-z_]+", RULES.read_text()))
    assert used, "the rules name no conveyor metric?"
    assert used <= exported, used - exported
