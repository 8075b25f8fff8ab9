"""Migrations as declared (validated when the class is defined) and judged by replay
(the pure step, no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.errors import DefinitionError
from engine.evolution import Migration
from engine.registry import Registry, UnknownMigration, load_workflows
from engine.replay import Step, judge
from tests.evolution_flows import ParcelV1, ParcelV1ToV2, ParcelV2, ParcelV2ToV1

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MIGRATION = ParcelV1ToV2.spec


# ---------------------------------------------------------------- declaring


def test_a_migration_maps_renamed_states_and_same_named_ones_by_themselves() -> None:
    assert dict(MIGRATION.state_map) == {
        "placed": "placed",
        "paid": "paid",
        "packing": "picking",
        "shipped": "shipped",
    }
    assert MIGRATION.not_migratable == {"manual_review"}
    assert (MIGRATION.name, MIGRATION.from_version, MIGRATION.to_version) == (
        "test.parcel-v1-to-v2",
        1,
        2,
    )
    assert MIGRATION.to_json()["upgrades_data"] is True


def declare(**body: Any) -> type[Migration]:
    attributes: dict[str, Any] = {"source": ParcelV1, "target": ParcelV2, **body}
    return type("Broken", (Migration,), attributes)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"states": {}}, "(state 'packing'): not mapped: v2 has no state 'packing'"),
        (
            {"states": {"packing": "boxing"}, "not_migratable": ("manual_review",)},
            "(state 'packing'): maps to 'boxing', which test.parcel v2 does not declare",
        ),
        (
            {"states": {"packing": "delivered"}, "not_migratable": ("manual_review",)},
            "maps to 'delivered', a final state of test.parcel v2",
        ),
        (
            {"states": {"packing": "picking"}, "not_migratable": ("lost",)},
            "test.parcel v1 declares no state 'lost'",
        ),
        (
            {"states": {"packing": "picking"}, "not_migratable": ("manual_review", "delivered")},
            "'delivered' is final in test.parcel v1",
        ),
        (
            {
                "states": {"packing": "picking", "manual_review": "paid"},
                "not_migratable": ("manual_review",),
            },
            "(state 'manual_review'): both mapped in `states` and listed in `not_migratable`",
        ),
        ({"target": ParcelV1}, "source and target are both test.parcel v1"),
        ({"name": "has space"}, "name 'has space' must be"),
        ({"source": object}, "set `source` to a workflow class"),
        ({"states": ["packing"]}, "`states` must map old state names"),
        ({"not_migratable": "manual_review", "states": {"packing": "picking"}}, "tuple of state"),
        (
            {"states": {"packing": "picking"}, "not_migratable": ("manual_review",), "upgrade": 3},
            "`upgrade` must be a function",
        ),
    ],
)
def test_a_broken_migration_is_refused_when_the_class_is_defined(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError) as error:
        declare(**body)
    assert message in str(error.value)


def test_the_registry_finds_migrations_and_names_those_declared_when_asked_for_another() -> None:
    registry = load_workflows(["tests.evolution_flows"])
    assert registry.migration("test.parcel", 1, 2) is MIGRATION
    assert [m.name for m in registry.migrations("test.parcel")] == [
        "test.parcel-v1-to-v2",
        "test.parcel-v2-to-v1",
    ]
    with pytest.raises(UnknownMigration) as error:
        registry.migration("test.parcel", 1, 3)
    assert "declared for test.parcel: test.parcel v1 -> v2" in str(error.value)


def test_a_second_migration_between_the_same_versions_is_a_definition_error() -> None:
    registry = Registry()
    registry.register_migration(ParcelV1ToV2)
    again = declare(states={"packing": "picking"}, not_migratable=("manual_review",), name="again")
    with pytest.raises(DefinitionError, match="declared twice"):
        registry.register_migration(again)


def test_registering_a_migration_registers_both_versions() -> None:
    registry = Registry()
    registry.register_migration(ParcelV1ToV2)
    assert registry.versions("test.parcel") == (1, 2)


# ---------------------------------------------------------------- upgrading data


def test_upgraded_data_is_validated_against_the_target_schema() -> None:
    assert MIGRATION.upgraded({"key": "p-1", "amount": 12}) == {
        "key": "p-1",
        "amount": 12,
        "carrier": None,
        "currency": "EUR",
    }
    errors = MIGRATION.upgraded({"key": "bad-1"})
    assert isinstance(errors, tuple)
    assert errors[0].path == "currency"


def test_an_upgrade_that_raises_is_that_instances_error_not_the_callers() -> None:
    def boom(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("total")

    broken = declare(
        states={"packing": "picking"},
        not_migratable=("manual_review",),
        upgrade=staticmethod(boom),
        name="boom",
    )
    errors = broken.spec.upgraded({"key": "p"})
    assert isinstance(errors, tuple)
    assert "upgrade raised KeyError" in errors[0].message


def test_the_upgrade_gets_a_copy_and_cannot_change_the_stored_data() -> None:
    data = {"key": "p-1", "amount": 1}
    MIGRATION.upgraded(data)
    assert data == {"key": "p-1", "amount": 1}


# ---------------------------------------------------------------- replay


def started(data: dict[str, Any], at: datetime = T0) -> Step:
    return Step(1, "start-1", "<start>", "api", "started", None, "placed", {"data": data}, at)


def applied(
    revision: int, event_type: str, to_state: str, payload: dict[str, Any] | None = None
) -> Step:
    at = T0 + timedelta(minutes=revision)
    source = "timer" if event_type in ("payment_timeout", "escalate") else "api"
    return Step(
        revision, f"e-{revision}", event_type, source, "applied", None, to_state, payload or {}, at
    )


async def test_an_instance_whose_history_v2_accepts_is_ok() -> None:
    steps = [
        started({"key": "p-1"}),
        applied(2, "parcel.paid", "paid", {"amount": 50}),
        applied(3, "parcel.packing", "packing"),
    ]
    verdict = await judge(MIGRATION, "packing", {"key": "p-1", "amount": 50}, steps)
    assert verdict.outcome == "ok"
    assert verdict.to_state == "picking"
    assert verdict.data == {"key": "p-1", "amount": 50, "carrier": None, "currency": "EUR"}
    assert verdict.reason is None


async def test_a_payment_v2_refuses_diverges_at_that_event_and_says_why() -> None:
    steps = [started({"key": "p-2"}), applied(2, "parcel.paid", "paid", {"amount": 5})]
    verdict = await judge(MIGRATION, "paid", {"key": "p-2", "amount": 5}, steps)
    assert verdict.outcome == "diverges"
    assert verdict.divergence is not None
    shown = verdict.to_json()["divergence"]
    assert shown["event_id"] == "e-2"
    assert shown["event_type"] == "parcel.paid"
    assert shown["expected"] == "paid"
    assert shown["decided"] == "rejected (guard_refused)"
    assert "no guard passed" in shown["reason"]


async def test_an_instance_in_a_state_not_migratable_is_unmapped() -> None:
    steps = [started({"key": "p-3"}), applied(2, "parcel.flagged", "manual_review")]
    verdict = await judge(MIGRATION, "manual_review", {"key": "p-3"}, steps)
    assert (verdict.outcome, verdict.to_state, verdict.data) == ("unmapped", None, None)
    assert "not migratable" in (verdict.reason or "")


async def test_an_instance_whose_passage_through_an_unmapped_state_v2_cannot_replay_diverges() -> (
    None
):
    steps = [
        started({"key": "p-4"}),
        applied(2, "parcel.flagged", "manual_review"),
        applied(3, "parcel.cleared", "paid"),
    ]
    verdict = await judge(MIGRATION, "paid", {"key": "p-4"}, steps)
    assert verdict.outcome == "diverges"
    assert verdict.divergence is not None
    assert verdict.divergence.event_type == "parcel.flagged"
    assert "unknown event type 'parcel.flagged'" in verdict.divergence.reason


async def test_data_the_target_refuses_is_invalid_data_and_never_migratable() -> None:
    verdict = await judge(MIGRATION, "placed", {"key": "bad-1"}, [started({"key": "bad-1"})])
    assert verdict.outcome == "invalid_data"
    assert verdict.data is None
    assert "currency" in (verdict.reason or "")


async def test_an_operators_move_is_replayed_as_a_move_to_the_mapped_state() -> None:
    moved = Step(2, "move-2", "conveyor.move", "operator", "moved", "placed", "packing", {}, T0)
    steps = [started({"key": "p-5"}), moved]
    verdict = await judge(MIGRATION, "packing", {"key": "p-5"}, steps)
    assert verdict.outcome == "ok"
    assert verdict.to_state == "picking"


async def test_timers_are_replayed_at_their_recorded_time() -> None:
    steps = [started({"key": "p-6"}), applied(2, "payment_timeout", "cancelled")]
    # (an instance that timed out has ended; replay still agrees on the way there)
    verdict = await judge(MIGRATION, "placed", {"key": "p-6"}, steps[:1])
    assert verdict.outcome == "ok"
    back = await judge(
        ParcelV2ToV1.spec,
        "escalated",
        {"key": "p-6", "currency": "EUR"},
        [
            started({"key": "p-6", "currency": "EUR"}),
            applied(2, "parcel.paid", "paid", {"amount": 20}),
            applied(3, "parcel.packing", "picking"),
            applied(4, "escalate", "escalated"),
        ],
    )
    # v1 has no escalation timer: replayed on v1 there is no such timer to fire
    assert back.outcome == "diverges"
    assert back.divergence is not None
    assert back.divergence.event_type == "escalate"
    assert back.divergence.decided == "no such timer"


async def test_replay_starts_at_the_last_migration_with_its_recorded_data() -> None:
    migrated = Step(
        4,
        "migrate-4",
        "conveyor.migrate",
        "operator",
        "migrated",
        "packing",
        "picking",
        {"data": {"key": "p-7", "amount": 50, "currency": "EUR"}},
        T0,
    )
    steps = [
        started({"key": "p-7"}),  # v1's start data (no currency): not replayed on v1 again
        applied(2, "parcel.paid", "paid", {"amount": 50}),
        applied(3, "parcel.packing", "packing"),
        migrated,
        applied(5, "parcel.shipped", "shipped", {"carrier": "DHL"}),
    ]
    data = {"key": "p-7", "amount": 50, "currency": "EUR", "carrier": "DHL"}
    verdict = await judge(ParcelV2ToV1.spec, "shipped", data, steps)
    assert verdict.outcome == "ok", verdict
    assert verdict.data == {"key": "p-7", "amount": 50, "carrier": "DHL"}


async def test_a_history_that_ends_elsewhere_than_the_mapped_state_diverges() -> None:
    steps = [started({"key": "p-8"}), applied(2, "parcel.paid", "paid", {"amount": 50})]
    verdict = await judge(MIGRATION, "placed", {"key": "p-8"}, steps)
    assert verdict.outcome == "diverges"
    assert verdict.divergence is not None
    assert "ends in 'paid'" in verdict.divergence.reason


async def test_a_move_that_ran_hooks_runs_the_targets_hooks_in_replay() -> None:
    moved = Step(
        2,
        "move-2",
        "conveyor.move",
        "operator",
        "moved",
        "placed",
        "packing",
        {"state": "packing", "run_hooks": True},
        T0,
    )
    verdict = await judge(MIGRATION, "packing", {"key": "p-9"}, [started({"key": "p-9"}), moved])
    assert verdict.outcome == "ok"


async def test_a_target_timer_due_before_a_recorded_event_would_have_fired_first() -> None:
    late = Step(
        2,
        "e-2",
        "parcel.paid",
        "api",
        "applied",
        "placed",
        "paid",
        {"amount": 50},
        T0 + timedelta(minutes=40),
    )
    verdict = await judge(MIGRATION, "paid", {"key": "p-10"}, [started({"key": "p-10"}), late])
    assert verdict.outcome == "diverges"
    assert verdict.divergence is not None
    assert verdict.divergence.decided == "timer 'payment_timeout'"
    assert "would have fired first" in verdict.divergence.reason


async def test_a_recorded_timer_must_be_due_on_the_target_when_it_fired() -> None:
    early = Step(
        2,
        "t-2",
        "payment_timeout",
        "timer",
        "applied",
        "placed",
        "cancelled",
        {},
        T0 + timedelta(minutes=10),
    )
    verdict = await judge(MIGRATION, "placed", {"key": "p-11"}, [started({"key": "p-11"}), early])
    assert verdict.outcome == "diverges"
    assert verdict.divergence is not None
    assert verdict.divergence.decided == "timer 'payment_timeout' not due"


async def test_an_instance_without_history_is_judged_by_its_state_with_a_note() -> None:
    verdict = await judge(MIGRATION, "packing", {"key": "p-12"}, [])
    assert (verdict.outcome, verdict.to_state) == ("ok", "picking")
    assert "no history to replay" in (verdict.reason or "")


async def test_empty_recorded_start_data_is_replayed_as_empty() -> None:
    bare = Step(1, "s", "<start>", "api", "started", None, "placed", {"data": {}}, T0)
    verdict = await judge(MIGRATION, "placed", {"key": "p-13"}, [bare])
    assert verdict.outcome == "diverges"  # {} misses the key: the start data does not fit v2
    assert verdict.divergence is not None
    assert verdict.divergence.decided == "invalid data"


def test_an_upgrade_that_is_not_a_function_of_the_data_is_refused() -> None:
    def two(data: dict[str, Any], other: int) -> dict[str, Any]:
        return data

    with pytest.raises(DefinitionError, match="function of the data alone"):
        declare(
            states={"packing": "picking"},
            not_migratable=("manual_review",),
            upgrade=staticmethod(two),
            name="two",
        )
    with pytest.raises(DefinitionError, match="tuple of state names"):
        declare(states={"packing": "picking"}, not_migratable=None, name="none")
