"""Conveyor's test kit: run workflows in memory, through the runtime's own decision path,
with a clock that moves only when told. No database, no Kafka.

    env = WorkflowEnvironment(Order)
    order = await env.start(Order, "o-1", {...})
    await order.expect_applied("payment.initiated", {...}, to="payment_pending")
    await env.advance(timedelta(minutes=30))      # the payment timeout fires
    assert order.state == "cancelled"

The pytest fixture ``workflow_env`` lives in :mod:`engine.testing.pytest_plugin`; random
valid event sequences for property-based tests in :mod:`engine.testing.strategies`
(needs hypothesis).
"""

from __future__ import annotations

from engine.operator_plan import Cancelled
from engine.testing.environment import (
    DEFAULT_START,
    Fired,
    Handle,
    PendingTimer,
    WorkflowEnvironment,
    messages_of,
)
from engine.testing.tables import Message

__all__ = [
    "DEFAULT_START",
    "Cancelled",
    "Fired",
    "Handle",
    "Message",
    "PendingTimer",
    "WorkflowEnvironment",
    "messages_of",
]
