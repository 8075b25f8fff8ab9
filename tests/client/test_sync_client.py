"""The synchronous client on a few calls of a live API: the same answers, the same
errors, plain iterators."""

from __future__ import annotations

import uuid

import pytest

from conveyor_client import Conveyor, EventNotAllowed, NotFound
from tests.e2e.http_support import order_data
from tests.live_support import LiveConsole


def test_the_sync_client_starts_sends_lists_and_raises(live: LiveConsole) -> None:
    prefix = f"sync-{uuid.uuid4().hex[:8]}"
    with Conveyor(live.base, live.keys.admin) as conveyor:
        started = [
            conveyor.start("order", f"{prefix}-{n}", order_data(f"{prefix}-{n}")) for n in range(3)
        ]
        listed = list(conveyor.instances(page_size=2, business_key_prefix=prefix))
        assert sorted(i.id for i in listed) == sorted(i.id for i in started)
        first = started[0]
        assert conveyor.find("order", first.business_key).id == first.id
        sent = conveyor.send(first.id, "payment.initiated", {"payment_id": "p", "provider": "x"})
        assert sent.instance.state == "payment_pending"
        assert [h.event_type for h in conveyor.history(first.id)] == [
            "order.placed",
            "payment.initiated",
        ]
        assert conveyor.cancel(first.id).instance.status == "cancelled"
        with pytest.raises(EventNotAllowed):
            conveyor.send(started[1].id, "order.shipped", {"carrier": "c", "tracking_number": "t"})
        with pytest.raises(NotFound):
            conveyor.get(str(uuid.uuid4()))
        assert conveyor.stats("order").workflows
