"""The pure request layer: paths, query parameters, bodies, headers and retry safety of
the calls both clients send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor_client import calls
from conveyor_client.calls import IDEMPOTENCY_HEADER


def test_filters_become_query_parameters_with_data_fields_dotted() -> None:
    params = calls.filter_params(
        {
            "workflow": "order",
            "status": "active",
            "sla_breached": True,
            "in_state_longer_than": timedelta(hours=1, minutes=30),
            "created_after": datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
            "data": {"customer_id": "C-7", "payment": {"provider": "psp"}, "vip": False},
        }
    )
    assert params == [
        ("workflow", "order"),
        ("status", "active"),
        ("sla_breached", "true"),
        ("in_state_longer_than", "PT5400S"),
        ("created_after", "2026-01-02T03:04:00+00:00"),
        ("data.customer_id", "C-7"),
        ("data.payment.provider", "psp"),
        ("data.vip", "false"),
    ]
    assert calls.iso_duration(timedelta(seconds=1.5)) == "PT1.5S"
    assert calls.iso_duration("P1D") == "P1D"


def test_a_start_carries_an_idempotency_key_and_may_be_sent_again() -> None:
    generated = calls.start("order", "o/1", {"a": 1})
    assert (generated.method, generated.path) == ("POST", "/v1/workflows/order/instances")
    assert generated.json == {"business_key": "o/1", "data": {"a": 1}}
    assert generated.headers[IDEMPOTENCY_HEADER]
    assert generated.retry_safe
    given = calls.start("order", "o/1", {}, version=2, idempotency_key="k-1")
    assert given.headers[IDEMPOTENCY_HEADER] == "k-1"
    assert given.json["version"] == 2


def test_an_event_carries_its_id_in_the_body() -> None:
    made = calls.send("i-1", "payment.captured", {"amount": "1"})
    assert made.json["id"]
    assert made.retry_safe
    assert calls.send("i-1", "x", event_id="e-1").json == {"type": "x", "payload": {}, "id": "e-1"}
    assert made.ok == frozenset({200, 202})


def test_business_keys_and_names_are_one_percent_encoded_segment() -> None:
    assert calls.find("order", "a/b zürich").path == (
        "/v1/workflows/order/instances/a%2Fb%20z%C3%BCrich"
    )
    assert calls.workflow("test.parcel", 1).params == (("version", "1"),)


def test_operator_calls_that_are_not_idempotent_are_marked_so() -> None:
    assert not calls.retry("i").retry_safe
    assert not calls.move("i", "paid").retry_safe
    assert not calls.replay_dead_letter(1).retry_safe
    assert not calls.discard_dead_letter(1).retry_safe
    assert calls.cancel("i").retry_safe
    assert calls.bulk_preview("cancel", {"workflow": "order"}).retry_safe
    job = calls.bulk_create(
        "send_event", {"workflow": "order"}, event_type="order.packed", payload={"n": 1}
    )
    assert job.headers[IDEMPOTENCY_HEADER]
    assert job.json == {
        "action": "send_event",
        "filter": {"workflow": "order"},
        "reason": "",
        "status_only": False,
        "event": {"type": "order.packed", "payload": {"n": 1}},
    }
    migration = calls.migrate("test.parcel", 1, 2, {"states": ["paid"]}, idempotency_key="m")
    assert migration.json == {
        "from_version": 1,
        "to_version": 2,
        "filter": {"states": ["paid"]},
        "force": False,
    }
