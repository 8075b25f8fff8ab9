"""Pure decisions per second on one core for the order workflow.

Run: ``.venv/bin/python bench/decide.py``. Prints the median of 5 runs per case, next to a
baseline measured in the same run (a dict lookup plus a frozen dataclass per iteration),
so figures from different machines compare as ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.decide import Decision, EventTrigger, Snapshot, Trigger, decide
from workflows.order import Order

RUNS = 5
ITERATIONS = 20_000
NOW = datetime(2025, 1, 1, tzinfo=UTC)
DATA: dict[str, Any] = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "currency": "EUR",
    "items": [{"sku": "sku-1", "quantity": 2, "unit_price": "10.00"}],
    "total": "20.00",
    "payment": {"payment_id": "p-1", "provider": "card"},
}
UNGUARDED = (Snapshot("shipped", DATA, 5), EventTrigger("e-1", "delivery.out_for_delivery", {}))
GUARDED = (
    Snapshot("payment_pending", DATA, 2),
    EventTrigger(
        "e-2", "payment.captured", {"payment_id": "p-1", "amount": "20.00", "currency": "EUR"}
    ),
)


@dataclass(frozen=True, slots=True)
class _Baseline:
    state: str
    event: str


def baseline_loop(n: int) -> None:
    table = {("shipped", "delivery.out_for_delivery"): "out_for_delivery"}
    for _ in range(n):
        _Baseline(table[("shipped", "delivery.out_for_delivery")], "delivery.out_for_delivery")


def decide_now(snapshot: Snapshot, trigger: Trigger) -> Decision:
    """Drive the coroutine by hand: without awaits inside, it finishes on the first send."""
    coro = decide(Order, snapshot, trigger, NOW)
    try:
        coro.send(None)
    except StopIteration as done:
        result = done.value
        assert isinstance(result, Decision)
        return result
    coro.close()
    raise RuntimeError("decide() suspended; run it on an event loop instead")


def send_loop(case: tuple[Snapshot, EventTrigger]) -> Callable[[int], None]:
    def run(n: int) -> None:
        snapshot, trigger = case
        for _ in range(n):
            decide_now(snapshot, trigger)

    return run


def asyncio_loop(case: tuple[Snapshot, EventTrigger]) -> Callable[[int], None]:
    async def many(n: int) -> None:
        snapshot, trigger = case
        for _ in range(n):
            await decide(Order, snapshot, trigger, NOW)

    return lambda n: asyncio.run(many(n))


def rate(loop: Callable[[int], None]) -> float:
    """Median operations per second over RUNS runs."""
    loop(1_000)  # warm up
    rates = []
    for _ in range(RUNS):
        started = time.perf_counter()
        loop(ITERATIONS)
        rates.append(ITERATIONS / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    assert decide_now(*UNGUARDED).to_state == "out_for_delivery"
    assert decide_now(*GUARDED).to_state == "paid"
    baseline = rate(baseline_loop)
    cases = [
        ("baseline: dict lookup + dataclass", baseline_loop),
        ("unguarded, no action (coro.send)", send_loop(UNGUARDED)),
        ("unguarded, no action (asyncio)", asyncio_loop(UNGUARDED)),
        ("guard + action + hook (coro.send)", send_loop(GUARDED)),
        ("guard + action + hook (asyncio)", asyncio_loop(GUARDED)),
    ]
    print(f"{'case':<38} {'decisions/s':>12} {'vs baseline':>12}")
    for label, loop in cases:
        per_second = baseline if loop is baseline_loop else rate(loop)
        print(f"{label:<38} {per_second:>12,.0f} {per_second / baseline:>11.3f}x")


if __name__ == "__main__":
    main()
