"""The shop example end to end: ``conveyor dev`` with ``shop.order`` loaded, and the
payment and carrier services of ``examples/shop`` (written with the client library's
command handlers) as processes of their own. The payment service is killed with SIGKILL
mid-stream and a new one takes over: every order still ends where it should, each charged
and each refunded once in effect (the ledger holds one row per order), and the workflow
asked for each refund once."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text

from engine.settings import Settings
from engine.store.database import create_engine
from examples.shop import ledger
from examples.shop.__main__ import FINAL, order, started
from tests.e2e.http_support import free_port, make_keys, process_env, wait_until_serving

ORDERS = 120
BEFORE_THE_KILL = 50
T = TypeVar("T")


def poll(what: str, check: Callable[[], T | None], timeout: float, logs: list[Path]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{_tail(p)}" for p in logs if p.exists())
            raise AssertionError(f"gave up waiting for {what}\n{tails}")
        time.sleep(0.2)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture
def shop_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    ledger_file = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("SHOP_LEDGER", str(ledger_file))  # this process reads the ledger too
    return process_env(
        settings,
        free_port(),
        CONVEYOR_WORKFLOW_MODULES="workflows,examples.shop.workflow",
        CONVEYOR_CONSUMER_GROUP=settings.consumer_group,
        SHOP_TOPIC_PREFIX=settings.topic_prefix,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        SHOP_LEDGER=str(ledger_file),
    )


async def test_every_order_ends_right_when_the_payment_service_is_killed_mid_stream(
    settings: Settings, shop_env: dict[str, str], tmp_path: Path
) -> None:
    keys = await make_keys(settings)
    base = f"http://127.0.0.1:{shop_env['CONVEYOR_HTTP_PORT']}"
    logs = [tmp_path / name for name in ("conveyor.log", "carrier.log", "pay1.log", "pay2.log")]
    payments = [sys.executable, "-m", "examples.shop.payments"]
    orders = [order(n, "K") for n in range(1, ORDERS + 1)]
    with (
        started([sys.executable, "-m", "engine.cli", "dev"], shop_env, logs[0]) as conveyor,
        started([sys.executable, "-m", "examples.shop.carrier"], shop_env, logs[1]),
        started(payments, shop_env, logs[2]) as first_payments,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {keys.write}"}, timeout=10
        ) as api,
    ):
        wait_until_serving(conveyor, base, logs[0])

        def place(batch: list[dict[str, Any]]) -> None:
            for data in batch:
                placed = api.post(
                    "/v1/workflows/shop.order/instances",
                    json={"business_key": data["order_id"], "data": data},
                )
                assert placed.status_code == 201, placed.text

        place(orders[:BEFORE_THE_KILL])
        # Kill the payment service while it is charging: some charges done, not all.
        poll("the first charges", lambda: len(ledger.counts("charges")) >= 10, 60, logs)
        first_payments.send_signal(signal.SIGKILL)
        first_payments.wait()
        charged_at_kill = len(ledger.counts("charges"))
        place(orders[BEFORE_THE_KILL:])
        with started(payments, shop_env, logs[3]):

            def ended() -> list[dict[str, Any]] | None:
                listed = api.get(
                    "/v1/instances", params={"workflow": "shop.order", "limit": 200}
                ).json()["items"]
                done = [i for i in listed if i["state"] in FINAL]
                return done if len(done) == ORDERS else None

            finished = poll("every order at its end", ended, 150, logs)

    declined = {o["order_id"] for n, o in enumerate(orders, 1) if n % 15 == 0}
    unserved = {o["order_id"] for n, o in enumerate(orders, 1) if n % 10 == 0} - declined
    shipped = {o["order_id"] for o in orders} - declined - unserved
    assert charged_at_kill < len(shipped) + len(unserved)  # killed mid-stream
    states = {i["business_key"]: i["state"] for i in finished}
    assert Counter(states.values()) == {
        "shipped": len(shipped),
        "declined": len(declined),
        "refunded": len(unserved),
    }
    assert {k for k, s in states.items() if s == "refunded"} == unserved
    assert {k for k, s in states.items() if s == "declined"} == declined
    by_key = {i["business_key"]: i for i in finished}
    assert all(by_key[k]["data"]["tracking_number"] for k in shipped)
    assert all(by_key[k]["data"]["refund_id"] for k in unserved)

    # Once in effect: one charge per paid order and one refund per refunded order in the
    # payment service's ledger, however often the commands were delivered.
    assert ledger.counts("charges") == dict.fromkeys(shipped | unserved, 1)
    assert ledger.counts("refunds") == dict.fromkeys(unserved, 1)
    # The workflow asked once per order, and nothing went to the dead letters.
    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
            asked = (
                await conn.execute(
                    text(
                        "select i.business_key, count(*) from outbox o"
                        " join instances i on i.id = o.instance_id"
                        " where convert_from(o.value, 'UTF8')::jsonb ->> 'type'"
                        " = 'payment.refund_requested' group by i.business_key"
                    )
                )
            ).all()
            dead = (await conn.execute(text("select count(*) from dead_letters"))).scalar_one()
    finally:
        await db.dispose()
    assert dict(asked) == dict.fromkeys(unserved, 1)
    assert dead == 0
