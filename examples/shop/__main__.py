"""Run the shop: Conveyor (API and worker, with ``shop.order`` loaded), the payment
service and the carrier service, then place orders and follow them to their end.

    make example                               # or: .venv/bin/python -m examples.shop
    .venv/bin/python -m examples.shop --orders 200 --port 8010

Needs the local stack (``make stack-up``). Uses the schema ``shop`` and the topic prefix
``shop`` (``SHOP_SCHEMA``, ``SHOP_TOPIC_PREFIX``), so it never touches ``make run``'s data.
Everything it starts is stopped when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from examples.shop import ledger

CONVEYOR = (sys.executable, "-m", "engine.cli")
FINAL = ("shipped", "declined", "refunded")


def order(number: int, run: str) -> dict[str, Any]:
    """Order ``number``: every 10th goes to Antarctica (no carrier: refunded), every 15th
    is over the payment limit (declined), the rest ship."""
    country = "AQ" if number % 10 == 0 else "DE"
    amount = "1500.00" if number % 15 == 0 else f"{20 + number % 50}.90"
    return {
        "order_id": f"{run}-{number:04d}",
        "amount": amount,
        "currency": "EUR",
        "address": {"street": "Hauptstr. 1", "city": "Berlin", "country": country},
    }


def environment(port: int) -> dict[str, str]:
    prefix = os.environ.get("SHOP_TOPIC_PREFIX", "shop")
    return dict(
        os.environ,
        CONVEYOR_DATABASE_SCHEMA=os.environ.get("SHOP_SCHEMA", "shop"),
        CONVEYOR_TOPIC_PREFIX=prefix,
        CONVEYOR_CONSUMER_GROUP=f"{prefix}-conveyor",
        CONVEYOR_WORKFLOW_MODULES="workflows,examples.shop.workflow",
        CONVEYOR_HTTP_PORT=str(port),
        CONVEYOR_LOG_LEVEL=os.environ.get("CONVEYOR_LOG_LEVEL", "WARNING"),
        SHOP_TOPIC_PREFIX=prefix,
        KAFKA_BOOTSTRAP_SERVERS=os.environ.get(
            "CONVEYOR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"
        ),
    )


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], output: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (its output to ``output`` if given), stopped with SIGTERM (then
    SIGKILL) when the block ends."""
    if output is None:
        proc = subprocess.Popen(command, env=env)
    else:
        with output.open("wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what: str, check: Any, timeout: float) -> Any:
    """Poll ``check()`` until it returns something true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting: {what}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=60)
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args()
    env = environment(args.port)
    os.environ.setdefault("SHOP_LEDGER", str(Path(".shop") / "ledger.sqlite"))
    subprocess.run([*CONVEYOR, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    key = subprocess.run(
        [*CONVEYOR, "apikey", "create", "--name", "shop-example", "--scopes", "write"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    base = f"http://127.0.0.1:{args.port}"
    with (
        started([*CONVEYOR, "dev"], env),
        started([sys.executable, "-m", "examples.shop.payments"], env),
        started([sys.executable, "-m", "examples.shop.carrier"], env),
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api,
    ):
        wait_until("Conveyor's /health", lambda: api.get("/health").is_success, 60)
        run = uuid.uuid4().hex[:6]
        ids = []
        for number in range(1, args.orders + 1):
            data = order(number, run)
            placed = api.post(
                "/v1/workflows/shop.order/instances",
                json={"business_key": data["order_id"], "data": data},
                headers={"Idempotency-Key": data["order_id"]},
            )
            placed.raise_for_status()
            ids.append(placed.json()["id"])
        print(f"placed {len(ids)} orders (run {run}); the services are working on them ...")

        def ended() -> list[dict[str, Any]] | None:
            found = [api.get(f"/v1/instances/{i}").json() for i in ids]
            return found if all(o["state"] in FINAL for o in found) else None

        orders = wait_until("every order at its end", ended, 120)
    by_state = Counter(o["state"] for o in orders)
    charges, refunds = ledger.counts("charges"), ledger.counts("refunds")
    ours = {o["data"]["order_id"] for o in orders}
    print(f"\n{'end state':<12} orders")
    for state in FINAL:
        print(f"{state:<12} {by_state[state]:>6}")
    print(
        f"\nledger ({ledger.path()}): {sum(n for k, n in charges.items() if k in ours)} "
        f"charges, {sum(n for k, n in refunds.items() if k in ours)} refunds for this run; "
        f"orders charged twice: {sum(1 for k, n in charges.items() if k in ours and n > 1)}, "
        f"refunded twice: {sum(1 for k, n in refunds.items() if k in ours and n > 1)}"
    )


if __name__ == "__main__":
    main()
