"""Every error class raised from a real problem answer of a live API, and from bodies
that are not problem+json."""

from __future__ import annotations

import uuid

import pytest

from conveyor_client import (
    AsyncConveyor,
    BadRequest,
    Conflict,
    ConveyorError,
    EventNotAllowed,
    EventRejected,
    Forbidden,
    GuardRefused,
    InstanceEnded,
    NotFound,
    Orphaned,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from conveyor_client.errors import from_response
from tests.e2e.http_support import order_data
from tests.live_support import LiveConsole


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_not_found_carries_the_problem_and_the_request_id(admin: AsyncConveyor) -> None:
    with pytest.raises(NotFound) as raised:
        await admin.get(str(uuid.uuid4()))
    error = raised.value
    assert (error.status, error.title) == (404, "Instance not found")
    assert error.detail is not None
    assert error.instance is not None
    assert error.instance.startswith("/v1/instances/")
    assert error.request_id
    with pytest.raises(NotFound):
        await admin.find("order", "no-such-order")
    with pytest.raises(NotFound):
        await admin.workflow("no.such.workflow")


async def test_a_refused_event_is_typed_by_its_reason(admin: AsyncConveyor) -> None:
    order = await admin.start("order", key("o"), order_data("o"))
    with pytest.raises(EventNotAllowed) as raised:
        await admin.send(order.id, "order.shipped", {"carrier": "DHL", "tracking_number": "1"})
    error = raised.value
    assert isinstance(error, EventRejected)
    assert isinstance(error, Conflict)
    assert (error.status, error.reason, error.state) == (409, "not_allowed", "placed")
    assert "payment.initiated" in error.allowed_events

    parcel = await admin.start("test.parcel", key("p"), {"key": "p", "currency": "EUR"})
    with pytest.raises(GuardRefused) as guarded:
        await admin.send(parcel.id, "parcel.paid", {"amount": 1})
    assert guarded.value.reason == "guard_refused"

    await admin.cancel(order.id)
    with pytest.raises(InstanceEnded):
        await admin.send(order.id, "payment.initiated", {"payment_id": "p", "provider": "x"})


async def test_payload_and_data_errors_name_each_field(admin: AsyncConveyor) -> None:
    bad = {**order_data("o"), "currency": "euro"}
    with pytest.raises(ValidationFailed) as raised:
        await admin.start("order", key("bad"), bad)
    assert raised.value.status == 422
    assert [e.path for e in raised.value.errors] == ["data.currency"]
    order = await admin.start("order", key("o"), order_data("o"))
    with pytest.raises(ValidationFailed) as payload:
        await admin.send(order.id, "payment.initiated", {"provider": "x"})
    assert "payload.payment_id" in [e.path for e in payload.value.errors]


async def test_conflicts_that_are_no_event_refusal(admin: AsyncConveyor) -> None:
    order = await admin.start("order", key("o"), order_data("o"))
    with pytest.raises(Conflict) as raised:
        await admin.retry(order.id)  # an active instance has nothing to retry
    assert type(raised.value) is Conflict


async def test_bad_requests_name_the_parameter(admin: AsyncConveyor) -> None:
    with pytest.raises(BadRequest) as raised:
        await admin.instances_page(data={"customer_id": "c"})  # data filters need workflow
    assert raised.value.status == 400
    assert "workflow" in str(raised.value)


async def test_keys_missing_wrong_or_without_the_scope(live: LiveConsole) -> None:
    async with AsyncConveyor(live.base, "not-a-key") as stranger:
        with pytest.raises(Unauthorized) as raised:
            await stranger.workflows()
    assert raised.value.status == 401
    assert "not-a-key" not in str(raised.value)
    async with AsyncConveyor(live.base) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.stats()
        assert await anonymous.health()  # public
    async with AsyncConveyor(live.base, live.keys.read) as reader:
        assert await reader.workflows()
        with pytest.raises(Forbidden) as forbidden:
            await reader.start("order", key("o"), order_data("o"))
    assert forbidden.value.status == 403
    async with AsyncConveyor(live.base, live.keys.write) as writer:
        order = await writer.start("order", key("o"), order_data("o"))
        with pytest.raises(Forbidden):
            await writer.cancel(order.id)


def test_bodies_that_are_not_problems_still_give_typed_errors() -> None:
    html = from_response(503, b"<html>Bad gateway</html>", {"Retry-After": "3"})
    assert isinstance(html, Unavailable)
    assert (html.title, html.detail, html.retry_after) == (
        "Service Unavailable",
        "<html>Bad gateway</html>",
        3.0,
    )
    assert isinstance(from_response(502, b""), ServerError)
    assert type(from_response(418, b"teapot")) is ConveyorError
    orphaned = from_response(
        409,
        b'{"type": "/problems/orphaned", "title": "Instance orphaned", "status": 409,'
        b' "reason": "orphaned"}',
        {"X-Request-ID": "r-1"},
    )
    assert isinstance(orphaned, Orphaned)
    assert orphaned.request_id == "r-1"
    assert orphaned.extra == {"reason": "orphaned"}
    listed = from_response(400, b"[1, 2]")
    assert (type(listed), listed.detail) == (BadRequest, "[1, 2]")
