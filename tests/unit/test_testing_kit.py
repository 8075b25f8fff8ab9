"""The test kit (engine.testing): workflows through time in memory, no services."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from engine.dsl import GuardContext, State, Workflow
from engine.errors import InstanceConflict, PayloadInvalid
from engine.model import InstanceStatus
from engine.testing import DEFAULT_START, Handle, WorkflowEnvironment, messages_of
from engine.testing.strategies import payloads_for, random_walk, steps
from tests import flows
from tests.key_reuse_flows import Ticket
from workflows.order import PACKING_SLA, PAYMENT_TIMEOUT, Order


def order_data(order_id: str = "o-1") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "c-1",
        "currency": "EUR",
        "items": [{"sku": "book", "quantity": 2, "unit_price": "10.00"}],
        "total": "20.00",
    }


INITIATED = {"payment_id": "pay-1", "provider": "card"}
CAPTURED = {"payment_id": "pay-1", "amount": "20.00", "currency": "EUR"}


async def paid_order(env: WorkflowEnvironment, key: str = "o-1") -> Handle:
    order = await env.start(Order, key, order_data(key))
    await order.expect_applied("payment.initiated", INITIATED, to="payment_pending")
    await order.expect_applied("payment.captured", CAPTURED, to="paid")
    return order


@pytest.fixture
def env() -> WorkflowEnvironment:
    return WorkflowEnvironment(Order, flows.Counter)


@pytest.fixture
def failures() -> Iterator[dict[str, int]]:
    flows.FAILURES.clear()
    yield flows.FAILURES
    flows.FAILURES.clear()


# ---------------------------------------------------------------- the order lifecycle


async def test_an_unpaid_order_is_cancelled_when_the_payment_times_out(
    env: WorkflowEnvironment,
) -> None:
    order = await env.start(Order, "o-1", order_data())
    await order.expect_applied("payment.initiated", INITIATED, to="payment_pending")
    assert [(t.name, t.due_at) for t in order.timers] == [
        ("payment_timeout", DEFAULT_START + PAYMENT_TIMEOUT)
    ]

    assert await env.advance(PAYMENT_TIMEOUT - timedelta(seconds=1)) == []
    assert order.state == "payment_pending"

    (fired,) = await env.advance(timedelta(seconds=1))
    assert (fired.name, fired.at, fired.outcome.status) == (
        "payment_timeout",
        DEFAULT_START + PAYMENT_TIMEOUT,
        "applied",
    )
    assert (order.state, order.status) == ("cancelled", InstanceStatus.CANCELLED)
    assert order.data["cancellation_reason"] == "payment timeout"
    assert order.timers == []
    assert [(m.type, m.data) for m in order.events] == [
        ("order.cancelled", {"order_id": "o-1", "reason": "payment timeout"})
    ]
    assert order.history[-1].source == "timer"
    assert order.history_outcomes() == [
        ("order.placed", "started"),
        ("payment.initiated", "applied"),
        ("payment_timeout", "applied"),
    ]


async def test_a_paid_order_left_unpacked_is_escalated_after_its_sla(
    env: WorkflowEnvironment,
) -> None:
    order = await paid_order(env)
    assert order.timers[0].name == "packing_overdue"
    assert messages_of(order.events, "order.paid")[0].data == {"order_id": "o-1", "total": "20.00"}
    assert order.data["payment"]["captured_amount"] == "20.00"

    fired = await env.advance(timedelta(hours=48))
    assert [(f.name, f.at) for f in fired] == [("packing_overdue", DEFAULT_START + PACKING_SLA)]
    assert env.now == DEFAULT_START + timedelta(hours=48)
    assert order.state == "packing_escalated"
    assert order.data["escalated"] is True
    assert order.instance.state_entered_at == DEFAULT_START + PACKING_SLA
    assert messages_of(env.events, "order.escalated")[0].data == {
        "order_id": "o-1",
        "reason": "packing overdue",
    }
    await order.expect_applied("order.packed", to="packed")


async def test_timers_of_several_instances_fire_in_due_order_each_at_its_time(
    env: WorkflowEnvironment,
) -> None:
    late = await paid_order(env, "late")
    await env.advance(timedelta(hours=1))
    early = await env.start(Order, "early", order_data("early"))
    await early.expect_applied("payment.initiated", INITIATED)
    fired = await env.advance(timedelta(days=2))
    assert [(f.instance_id, f.name, f.at) for f in fired] == [
        (early.id, "payment_timeout", DEFAULT_START + timedelta(hours=1) + PAYMENT_TIMEOUT),
        (late.id, "packing_overdue", DEFAULT_START + PACKING_SLA),
    ]
    assert env.pending_timers() == []


async def test_rejections_say_why_and_change_nothing(env: WorkflowEnvironment) -> None:
    order = await env.start(Order, "o-1", order_data())
    not_allowed = await order.expect_rejected(
        "order.shipped", {"carrier": "dhl", "tracking_number": "t-1"}, reason="not_allowed"
    )
    assert not_allowed.allowed_events == ("order.cancellation_requested", "payment.initiated")
    assert not_allowed.state == "placed"

    invalid = await order.expect_rejected("payment.initiated", {}, reason="invalid_payload")
    assert {e.path for e in invalid.field_errors} == {"payment_id", "provider"}

    await order.expect_rejected("no.such.event", reason="unknown_event")
    rejected = [h for h in order.history if h.outcome == "rejected"]
    assert [h.event_type for h in rejected] == [
        "order.shipped",
        "payment.initiated",
        "no.such.event",
    ]
    assert rejected[0].reason == not_allowed.message
    assert order.revision == 1

    await order.send("order.cancellation_requested", {"reason": "changed my mind"})
    await order.expect_rejected(
        "payment.initiated", INITIATED, reason="inactive", match="cancelled"
    )

    with pytest.raises(AssertionError, match="was rejected as 'inactive', not 'not_allowed'"):
        await order.expect_rejected("payment.initiated", INITIATED, reason="not_allowed")


class Door(BaseModel):
    locked: bool = True


class Open(BaseModel):
    key: str


def right_key(ctx: GuardContext[Door, Open]) -> bool:
    return ctx.payload.key == "secret"


class Vault(Workflow[Door]):
    name = "test.vault"
    version = 1
    data_schema = Door
    events = {"door.open": Open}

    shut = State(initial=True)
    opened = State(final=True)

    open_door = shut.on("door.open").to(opened, guard=right_key)


async def test_a_refusing_guard_is_a_guard_refused_rejection() -> None:
    env = WorkflowEnvironment(Vault)
    vault = await env.start(Vault, "v-1", {})
    refused = await vault.expect_rejected("door.open", {"key": "guess"}, reason="guard_refused")
    assert refused.state == "shut"
    await vault.expect_applied("door.open", {"key": "secret"}, to="opened")
    assert vault.status is InstanceStatus.COMPLETED
    await vault.expect_rejected("door.open", {"key": "secret"}, reason="inactive")


async def test_a_start_with_invalid_data_or_a_taken_key_is_refused(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(PayloadInvalid) as invalid:
        await env.start(Order, "o-1", {**order_data(), "total": "99.00"})
    assert invalid.value.field_errors
    await env.start("order", "o-1", order_data())
    with pytest.raises(InstanceConflict):
        await env.start(Order, "o-1", order_data())


async def test_the_same_idempotency_key_starts_once(env: WorkflowEnvironment) -> None:
    first = await env.start(Order, "o-1", order_data(), idempotency_key="req-1")
    again = await env.start(Order, "o-1", order_data(), idempotency_key="req-1")
    assert again == first
    assert len(env.instances) == 1
    with pytest.raises(InstanceConflict, match="was used to start"):
        await env.start(Order, "o-2", order_data("o-2"), idempotency_key="req-1")


async def test_an_ended_instance_gives_its_key_up_where_the_version_allows() -> None:
    env = WorkflowEnvironment(Ticket)
    first = await env.start(Ticket, "T-1", {"number": "T-1"})
    with pytest.raises(InstanceConflict):
        await env.start(Ticket, "T-1", {"number": "T-1"})
    await first.cancel(reason="duplicate")
    second = await env.start(Ticket, "T-1", {"number": "T-1"})
    assert second != first
    assert env.handle(Ticket, "T-1") == second
    assert (first.status, second.status) == (InstanceStatus.CANCELLED, InstanceStatus.ACTIVE)


async def test_the_same_event_id_twice_is_a_duplicate(env: WorkflowEnvironment) -> None:
    order = await env.start(Order, "o-1", order_data())
    first = await order.send("payment.initiated", INITIATED, id="evt-1")
    again = await order.send("payment.initiated", INITIATED, id="evt-1")
    assert (first.status, again.status) == ("applied", "duplicate")
    assert order.revision == 2


# ---------------------------------------------------------------- operator actions


async def test_cancelling_a_paid_order_requests_a_refund(env: WorkflowEnvironment) -> None:
    order = await paid_order(env)
    cancelled = await order.cancel(reason="customer called")
    assert (cancelled.mode, cancelled.transition) == ("transition", "operator_cancel_paid")
    assert (order.state, order.status) == ("cancelled", InstanceStatus.CANCELLED)
    assert order.timers == []
    (refund,) = env.commands
    assert (refund.type, refund.topic, refund.key) == (
        "payment.refund_requested",
        "conveyor.commands",
        "o-1",
    )
    assert refund.data == {
        "order_id": "o-1",
        "payment_id": "pay-1",
        "amount": "20.00",
        "currency": "EUR",
    }
    assert refund.cloudevent["conveyorinstance"] == str(order.id)
    assert (await order.cancel()).mode == "already"


async def test_cancelling_an_unpaid_order_requests_no_refund(env: WorkflowEnvironment) -> None:
    order = await env.start(Order, "o-1", order_data())
    assert (await order.cancel(reason="fraud")).transition == "operator_cancel_unpaid"
    assert order.data["cancellation_reason"] == "fraud"
    assert env.commands == []


async def test_a_status_only_cancel_keeps_the_state(env: WorkflowEnvironment) -> None:
    order = await paid_order(env)
    cancelled = await order.cancel(reason="ops", status_only=True)
    assert (cancelled.mode, order.state, order.status) == (
        "status",
        "paid",
        InstanceStatus.CANCELLED,
    )
    assert order.history[-1].outcome == "cancelled"
    assert order.timers == []


async def test_a_move_enters_the_state_and_its_timers(env: WorkflowEnvironment) -> None:
    order = await env.start(Order, "o-1", order_data())
    moved = await order.move("paid", reason="paid by bank transfer")
    assert (moved.state, order.history[-1].outcome) == ("paid", "moved")
    assert [t.name for t in order.timers] == ["packing_overdue"]


# ---------------------------------------------------------------- failures and retries


async def test_a_failing_action_is_retried_at_once_while_its_backoff_is_zero(
    env: WorkflowEnvironment, failures: dict[str, int]
) -> None:
    counter = await env.start(flows.Counter, "k-1", {"key": "k-1"})
    failures["k-1"] = 2
    outcome = await counter.send("counter.label", {"label": "third time lucky"})
    assert (outcome.status, counter.state) == ("applied", "labelled")
    assert counter.history_outcomes()[-1] == ("counter.label", "applied")


async def test_an_action_failing_every_attempt_fails_the_instance_until_retried(
    env: WorkflowEnvironment, failures: dict[str, int]
) -> None:
    counter = await env.start(flows.Counter, "k-1", {"key": "k-1"})
    failures["k-1"] = 3
    outcome = await counter.send("counter.label", {"label": "x"})
    assert outcome.status == "failed"
    assert counter.status is InstanceStatus.FAILED
    assert counter.error is not None
    assert counter.error["attempts"] == 3
    assert "label service exploded" in (counter.history[-1].reason or "")
    await counter.expect_rejected("counter.tick", {"by": 1}, reason="inactive", match="retry it")

    retried = await counter.retry()
    assert (retried.status, counter.state, counter.status) == (
        "applied",
        "labelled",
        InstanceStatus.ACTIVE,
    )
    assert [o for _, o in counter.history_outcomes()][-4:] == [
        "failed",
        "rejected",
        "retried",
        "applied",
    ]


async def test_a_backoff_makes_the_instance_wait_for_a_retry_timer_with_events_parked(
    env: WorkflowEnvironment, failures: dict[str, int]
) -> None:
    counter = await env.start(flows.Counter, "k-1", {"key": "k-1"})
    failures["k-1"] = 1
    outcome = await counter.send("counter.slow_label", {"label": "later"})
    assert (outcome.status, counter.status) == ("retrying", InstanceStatus.RETRYING)
    retry_timer = next(t for t in counter.timers if t.name == "conveyor.retry")
    assert retry_timer.due_at == DEFAULT_START + timedelta(seconds=30)

    parked = await counter.send("counter.tick", {"by": 5})
    assert parked.status == "parked"
    assert [p["event_type"] for p in counter.parked] == ["counter.tick"]

    fired = await env.advance(timedelta(seconds=30))
    assert [(f.name, f.outcome.status) for f in fired] == [("conveyor.retry", "applied")]
    assert (counter.state, counter.status) == ("labelled", InstanceStatus.ACTIVE)
    assert counter.data["label"] == "later"
    assert counter.parked == []
    # The parked tick came after the label: not allowed in 'labelled', refused.
    assert counter.history_outcomes()[-4:] == [
        ("counter.slow_label", "retrying"),
        ("conveyor.retry", "resumed"),
        ("counter.slow_label", "applied"),
        ("counter.tick", "rejected"),
    ]


async def test_a_timer_that_fires_into_a_retrying_instance_waits_for_the_retry(
    env: WorkflowEnvironment, failures: dict[str, int]
) -> None:
    counter = await env.start(flows.Counter, "k-1", {"key": "k-1"})
    await env.advance(timedelta(minutes=59, seconds=50))
    failures["k-1"] = 2
    assert (await counter.send("counter.slow_label", {"label": "x"})).status == "retrying"
    fired = await env.advance(timedelta(minutes=5))
    assert [(f.name, f.outcome.status) for f in fired][:2] == [
        ("idle", "deferred"),
        ("conveyor.retry", "retrying"),
    ]
    assert counter.state == "labelled"  # the third attempt succeeded
    assert counter.timers == []  # the idle timer was dropped on leaving 'open'


# ---------------------------------------------------------------- determinism


async def scenario(env: WorkflowEnvironment) -> Handle:
    order = await paid_order(env)
    await env.advance(timedelta(days=1))
    await order.send("order.packed")
    await order.cancel(reason="out of stock")
    return order


async def test_two_runs_write_identical_histories_and_messages() -> None:
    first, second = WorkflowEnvironment(Order), WorkflowEnvironment(Order)
    one, two = await scenario(first), await scenario(second)
    assert one.id == two.id
    assert one.history == two.history
    assert first.messages == second.messages
    other = await scenario(WorkflowEnvironment(Order, seed="other"))
    assert other.id != one.id
    assert [(h.event_type, h.outcome) for h in other.history] == one.history_outcomes()


def test_the_clock_starts_where_told_and_never_goes_back() -> None:
    start = datetime(2030, 5, 1, 8, tzinfo=UTC)
    env = WorkflowEnvironment(Order, start=start)
    assert env.now == env.clock() == start
    with pytest.raises(ValueError, match="does not go back"):
        env.set_time(start - timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware"):
        WorkflowEnvironment(Order, start=datetime(2030, 5, 1))


def test_the_kit_loads_no_driver_no_web_framework_and_no_hypothesis() -> None:
    probe = (
        "import sys, engine.testing, engine.testing.pytest_plugin; "
        "print(','.join(sorted(m for m in ('asyncpg', 'sqlalchemy', 'aiokafka', 'sanic', "
        "'alembic', 'hypothesis') if m in sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# ---------------------------------------------------------------- the pytest fixture


async def test_the_workflow_env_fixture_runs_the_workflows_package(
    workflow_env: WorkflowEnvironment,
) -> None:
    order = await workflow_env.start("order", "o-1", order_data())
    assert order.state == "placed"
    assert isinstance(order.id, uuid.UUID)
    assert workflow_env.handle(Order, "o-1") == order


# ---------------------------------------------------------------- random valid sequences

ORDER_PAYLOADS = {
    "payment.initiated": st.just(INITIATED),
    "payment.captured": st.sampled_from(
        [CAPTURED, {**CAPTURED, "amount": "5.00"}, {**CAPTURED, "currency": "USD"}]
    ),
    "payment.failed": st.just({"reason": "declined"}),
    "order.cancellation_requested": st.just({"reason": "changed my mind"}),
    "order.shipped": st.just({"carrier": "dhl", "tracking_number": "t-1"}),
    "delivery.failed": st.just({"reason": "nobody home"}),
    "return.requested": st.just({"reason": "too small"}),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
async def test_random_valid_sequences_keep_the_order_in_declared_states(
    data: st.DataObject,
) -> None:
    env = WorkflowEnvironment(Order)
    order = await env.start(Order, "o-1", order_data())
    walk = await random_walk(env, order, data, payloads=ORDER_PAYLOADS, max_steps=25)
    spec = Order.spec
    for taken in walk:
        assert taken.state_after in spec.states
        assert taken.state_before not in spec.finals
        if taken.outcome is not None:
            # Every step is valid: applied, or refused only by the data (a guard).
            assert taken.outcome.status in ("applied", "rejected")
    revisions = [h.revision for h in order.history]
    assert revisions == sorted(revisions)
    if order.state in spec.finals:
        assert order.status is not InstanceStatus.ACTIVE
        assert order.timers == []
        for event in sorted(spec.handled_events):
            outcome = await order.send(event, {})
            assert outcome.status == "rejected"
        assert order.state in spec.finals


@given(st.data())
@settings(max_examples=30, deadline=None)
def test_steps_draw_only_what_a_state_allows(data: st.DataObject) -> None:
    state = data.draw(st.sampled_from(sorted(Order.spec.states)))
    strategy = steps(Order, state, payloads=ORDER_PAYLOADS)
    allowed = set(Order.spec.allowed_events.get(state, ()))
    timers = {name for source, name in Order.spec.timer_routes if source == state}
    if not allowed and not timers:
        assert strategy.is_empty
        return
    step = data.draw(strategy)
    assert step.type in (allowed if step.kind == "event" else timers)


def test_payloads_for_a_schema_are_accepted_by_it() -> None:
    @given(payloads_for(flows.Label))
    def check(payload: Any) -> None:
        assert flows.Label.model_validate(payload).label == payload["label"]

    check()
