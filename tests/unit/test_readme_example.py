"""The README's DSL example runs, so the docs cannot rot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docs.dsl_example import MiniOrder
from engine.decide import Decision, EventTrigger, Snapshot, TimerTrigger, decide, initial_decision
from engine.introspect import mermaid

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


async def test_readme_example_pays_ships_and_refunds_on_cancel() -> None:
    started = await initial_decision(
        MiniOrder, {"order_id": "o-1", "total": "20"}, event_id="e-0", now=NOW
    )
    assert isinstance(started, Decision)
    assert started.timers_to_set[0].due_at == NOW + timedelta(minutes=30)
    placed = Snapshot(started.to_state, started.data, revision=1)

    paid = await decide(
        MiniOrder, placed, EventTrigger("e-1", "payment.captured", {"amount": "20"}), NOW
    )
    assert isinstance(paid, Decision)
    assert (paid.to_state, paid.outbound[0].type) == ("paid", "order.paid")
    assert paid.timers_to_cancel == ("payment_timeout",)

    cancelled = await decide(
        MiniOrder,
        Snapshot(paid.to_state, paid.data, revision=2),
        EventTrigger("e-2", "order.cancelled", {}),
        NOW,
    )
    assert isinstance(cancelled, Decision)
    assert cancelled.finished
    assert cancelled.outbound[0].kind == "command"


async def test_readme_example_short_payment_goes_to_review_and_timeout_cancels() -> None:
    placed = Snapshot("placed", {"order_id": "o-1", "total": "20", "paid": "0"}, 1)
    short = await decide(
        MiniOrder, placed, EventTrigger("e-1", "payment.captured", {"amount": "5"}), NOW
    )
    assert isinstance(short, Decision)
    assert short.to_state == "review"
    expired = await decide(MiniOrder, placed, TimerTrigger("t-1", "payment_timeout", "placed"), NOW)
    assert isinstance(expired, Decision)
    assert (expired.to_state, expired.outbound) == ("cancelled", ())


def test_readme_example_draws_as_mermaid() -> None:
    assert "placed --> cancelled : after 30m" in mermaid(MiniOrder)


def test_readme_shows_the_example_file_word_for_word() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    example = (root / "docs" / "dsl_example.py").read_text()
    readme = (root / "README.md").read_text()
    assert f"```python\n{example}```" in readme


async def test_readme_migration_example_judges_paid_review_and_partly_paid_orders() -> None:
    from docs.evolution_example import MiniOrderV1ToV2
    from engine.replay import Step, judge

    migration = MiniOrderV1ToV2.spec
    start = Step(1, "e-0", "order.placed", "kafka", "started", None, "placed", {"data": CART}, NOW)

    def paid(amount: str, to_state: str) -> Step:
        return Step(
            2,
            "e-1",
            "payment.captured",
            "api",
            "applied",
            "placed",
            to_state,
            {"amount": amount},
            NOW,
        )

    in_full = await judge(migration, "paid", {**CART, "paid": "20"}, [start, paid("20", "paid")])
    assert (in_full.outcome, in_full.to_state) == ("ok", "packing")
    assert in_full.data is not None
    assert in_full.data["currency"] == "EUR"
    in_review = await judge(migration, "review", CART, [start, paid("5", "review")])
    assert in_review.outcome == "unmapped"
    approved = Step(3, "e-2", "review.approved", "api", "applied", "review", "paid", {}, NOW)
    reviewed = await judge(migration, "paid", CART, [start, paid("5", "review"), approved])
    assert reviewed.outcome == "diverges"
    assert reviewed.divergence is not None
    assert reviewed.divergence.event_id == "e-1"


def test_readme_shows_the_migration_example_word_for_word() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    example = (root / "docs" / "evolution_example.py").read_text()
    readme = (root / "README.md").read_text()
    assert f"```python\n{example}```" in readme


CART = {"order_id": "o-1", "total": "20"}
