"""Schedules as declared (validation) and their ticks (pure): cron in a zone's wall clock
across daylight saving time, intervals, and which ticks fire after a pause."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import pytest

from engine.errors import DefinitionError
from engine.registry import Registry
from engine.schedules import Schedule, ScheduleSpec
from engine.ticks import MISFIRE_GRACE, due, next_tick, ticks_after
from workflows.order import Order


def spec(**attributes: Any) -> ScheduleSpec:
    """A schedule class with these attributes (a publishing one unless told)."""
    body: dict[str, Any] = {"name": "s", "publishes": "report.due", **attributes}
    if "cron" not in body and "every" not in body:
        body["cron"] = "0 * * * *"
    made: type[Schedule] = type("Declared", (Schedule,), body)
    return made.spec


def local(ticks: Iterator[datetime], zone: str, n: int) -> list[str]:
    from zoneinfo import ZoneInfo

    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for t in islice(ticks, n)]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"name": "bad name!"}, "name must be"),
        ({"cron": "0 * * *"}, "five fields"),
        ({"cron": "61 * * * *"}, "not a valid cron"),
        ({"cron": "0 * * * *", "every": timedelta(hours=1)}, "either cron or every"),
        ({"cron": None, "every": timedelta(0)}, "at least 1 second"),
        ({"timezone": "Europe/Atlantis"}, "unknown time zone"),
        ({"publishes": None}, "either starts"),
        ({"publishes": "conveyor.tick"}, "reserved"),
        ({"starts": Order}, "either starts"),
        ({"business_key": "r-{when}"}, "not a valid template"),
        ({"business_key": ""}, "non-empty"),
        ({"missed": "some"}, "missed must be one of"),
        ({"max_catch_up": 0}, "max_catch_up"),
        ({"data": [1, 2]}, "data must be"),
        ({"data": lambda: {"a": 1}}, r"data\(tick\) takes the tick"),
        ({"data": dict}, r"data\(tick\) takes the tick"),
    ],
)
def test_a_broken_schedule_is_a_definition_error(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        spec(**attributes)


def test_a_start_schedule_names_its_workflow_and_builds_keys_and_data_per_tick() -> None:
    made = spec(
        publishes=None,
        starts=Order,
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        business_key="reconcile-{local:%Y-%m-%d}",
        data=staticmethod(lambda tick: {"day": tick.date().isoformat()}),
    )
    assert (made.workflow, made.event_type, made.target) == ("order", None, "start order")
    tick = at("2026-12-02T23:30:00")  # 00:30 on the 3rd in Berlin
    assert made.key_for(tick) == "reconcile-2026-12-03"
    assert made.data_for(tick) == {"day": "2026-12-02"}
    assert made.when == "30 2 * * * (Europe/Berlin)"
    default = spec()
    assert default.key_for(tick) == "s-2026-12-02T23:30:00Z"


def test_a_schedule_naming_an_unknown_workflow_fails_when_the_schedules_load() -> None:
    registry = Registry()
    registry.register_schedule(
        type(
            "Nightly",
            (Schedule,),
            {"name": "nightly", "cron": "0 2 * * *", "starts": "reconciliation"},
        )
    )
    with pytest.raises(DefinitionError, match="starts workflow 'reconciliation'"):
        registry.check_schedules()


def test_daily_cron_in_berlin_fires_once_on_both_daylight_saving_days() -> None:
    daily = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist; it is read
    # with the offset before the jump, so it fires once, at 03:30 summer time.
    assert local(ticks_after(daily, at("2026-03-27T12:00:00")), "Europe/Berlin", 3) == [
        "03-28 02:30+0100",
        "03-29 03:30+0200",
        "03-30 02:30+0200",
    ]
    # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 comes twice; it fires once, at
    # the first (summer time).
    assert local(ticks_after(daily, at("2026-10-23T12:00:00")), "Europe/Berlin", 3) == [
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-26 02:30+0100",
    ]


def test_hourly_cron_never_fires_twice_at_one_instant_across_the_jumps() -> None:
    hourly = spec(cron="30 * * * *", timezone="Europe/Berlin")
    spring = list(islice(ticks_after(hourly, at("2026-03-28T23:00:00")), 5))
    assert local(iter(spring), "Europe/Berlin", 5) == [
        "03-29 00:30+0100",
        "03-29 01:30+0100",
        "03-29 03:30+0200",  # 02:30 and 03:30 are one instant: one tick
        "03-29 04:30+0200",
        "03-29 05:30+0200",
    ]
    autumn = list(islice(ticks_after(hourly, at("2026-10-24T23:00:00")), 4))
    assert local(iter(autumn), "Europe/Berlin", 4) == [
        "10-25 01:30+0200",
        "10-25 02:30+0200",  # the repeated 02:30 (winter time) does not fire again
        "10-25 03:30+0100",
        "10-25 04:30+0100",
    ]
    for ticks in (spring, autumn):
        assert ticks == sorted(set(ticks))


def test_an_interval_ticks_at_multiples_of_its_length_since_the_anchor() -> None:
    quarter = spec(cron=None, every=timedelta(minutes=15), timezone="Asia/Kolkata")
    assert next_tick(quarter, at("2026-12-03T10:07:12")) == at("2026-12-03T10:15:00")
    assert next_tick(quarter, at("2026-12-03T10:15:00")) == at("2026-12-03T10:30:00")
    anchored = spec(cron=None, every=timedelta(hours=6), anchor=at("2026-01-01T01:00:00"))
    assert next_tick(anchored, at("2026-12-03T08:00:00")) == at("2026-12-03T13:00:00")


def test_a_tick_reached_on_time_fires_and_the_next_one_is_set() -> None:
    hourly = spec()
    now = at("2026-12-03T10:00:02")
    result = due(hourly, at("2026-12-03T10:00:00"), now)
    assert result.fire == (at("2026-12-03T10:00:00"),)
    assert (result.skipped, result.skipped_count) == ((), 0)
    assert result.next_tick == at("2026-12-03T11:00:00")
    assert due(hourly, at("2026-12-03T11:00:00"), now).fire == ()


@pytest.mark.parametrize(
    ("missed", "fired", "skipped"),
    [
        ("latest", ["09:00"], ["05:00", "06:00", "07:00", "08:00"]),
        ("all", ["06:00", "07:00", "08:00", "09:00"], ["05:00"]),  # max_catch_up 4
        ("skip", [], ["05:00", "06:00", "07:00", "08:00", "09:00"]),
    ],
)
def test_after_downtime_the_policy_decides_about_missed_ticks(
    missed: str, fired: list[str], skipped: list[str]
) -> None:
    hourly = spec(missed=missed, max_catch_up=4)
    now = at("2026-12-03T09:30:00")  # down since before 05:00
    result = due(hourly, at("2026-12-03T05:00:00"), now)
    assert [t.strftime("%H:%M") for t in result.fire] == fired
    assert result.skipped_count == 5 - len(fired)
    assert result.next_tick == at("2026-12-03T10:00:00")
    listed = [t.strftime("%H:%M") for t in result.skipped]
    assert set(listed) <= set(skipped)


def test_a_tick_within_the_grace_fires_whatever_the_policy() -> None:
    for missed in ("latest", "all", "skip"):
        result = due(
            spec(missed=missed),
            at("2026-12-03T10:00:00"),
            at("2026-12-03T10:00:00") + MISFIRE_GRACE,
        )
        assert result.fire == (at("2026-12-03T10:00:00"),)


def test_the_readme_shows_the_schedules_example_word_for_word() -> None:
    from pathlib import Path

    from docs.schedules_example import NightlyReconciliation, WaveRelease

    root = Path(__file__).resolve().parents[2]
    example = (root / "docs" / "schedules_example.py").read_text()
    assert f"```python\n{example}```" in (root / "README.md").read_text()
    nightly = NightlyReconciliation.spec
    tick = next_tick(nightly, at("2026-12-02T12:00:00"))
    assert tick == at("2026-12-03T01:30:00")  # 02:30 in Berlin (winter time)
    assert nightly.key_for(tick) == "reconcile-2026-12-03"
    assert nightly.data_for(tick) == {"business_date": "2026-12-02"}  # yesterday
    assert WaveRelease.spec.key_for(at("2026-12-03T10:15:00")) == "wave-20261203T1015"
