"""The README's client example (docs/client_example.py) runs against a live API, and the
README shows it word for word."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.live_support import LiveConsole

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "client_example.py"


def test_the_client_example_runs_against_a_live_api(live: LiveConsole) -> None:
    env = {**os.environ, "CONVEYOR_URL": live.base, "CONVEYOR_API_KEY": live.keys.write}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    order_id = lines[0].split()[0]
    assert lines[0] == f"{order_id} is paid"
    assert lines[1:4] == [
        "  1 order.placed: None -> placed",
        "  2 payment.initiated: placed -> payment_pending",
        "  3 payment.captured: payment_pending -> paid",
    ]
    assert any(line.startswith(f"paid: {order_id} since ") for line in lines[4:])
    assert lines[-1].startswith("not found (404): ")


def test_the_readme_shows_the_client_example_word_for_word() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in readme
