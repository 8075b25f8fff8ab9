"""Declaring schedules: work that starts on a calendar, exactly once per tick.

A schedule is declared next to the workflows, like them a class validated when it is
defined::

    class NightlyReconciliation(Schedule):
        name = "nightly-reconciliation"
        cron = "30 2 * * *"                 # five fields: minute hour day month weekday
        timezone = "Europe/Berlin"          # an IANA zone; the cron reads its wall clock
        starts = PaymentReconciliation      # a workflow class (or its name)
        business_key = "reconcile-{tick:%Y-%m-%d}"
        missed = "latest"                   # after downtime: "latest", "all" or "skip"

        @staticmethod
        def data(tick: datetime) -> dict[str, Any]:   # or a plain dict
            return {"business_date": tick.date().isoformat()}

or, instead of ``starts``, ``publishes = "warehouse.wave_release_due"``: a CloudEvent of
that type on ``{prefix}.in`` (subject: the business key) for any workflow or service.
``every = timedelta(minutes=15)`` replaces ``cron`` for a fixed interval (ticks at whole
multiples of it since ``anchor``, by default 2000-01-01 00:00 UTC).

A **tick** is the instant a schedule is due, in UTC; its id is the schedule's name and
that instant, and everything it causes carries an id derived from them (the start's
idempotency key, the CloudEvent id), so it can take effect only once. Daylight saving
time: the cron reads the zone's wall clock, each wall-clock time of a day once. A time
that does not exist on a spring-forward day (02:30 in Berlin on the last Sunday of March)
fires once, read with the offset before the jump: at 03:30 summer time; a time that comes
twice on an autumn day (02:30 on the last Sunday of October) fires once, at its first
occurrence (summer time). See :mod:`engine.ticks`.

Schedules are found where workflows are (``CONVEYOR_WORKFLOW_MODULES``) and kept by the
registry (:meth:`engine.registry.Registry.schedules`).
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from engine.dsl import Workflow
from engine.errors import DefinitionError

MissedTicks = Literal["latest", "all", "skip"]
"""After downtime: fire the latest missed tick once, every missed tick in order (at most
``max_catch_up``), or none (carry on from the next one)."""
MISSED: tuple[MissedTicks, ...] = ("latest", "all", "skip")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
DEFAULT_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
MIN_INTERVAL = timedelta(seconds=1)
DEFAULT_BUSINESS_KEY = "{schedule}-{tick:%Y-%m-%dT%H:%M:%SZ}"
"""The default business key (started instances) and subject (published events)."""

TickData = Callable[[datetime], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule."""

    name: str
    cron: str | None
    every: timedelta | None
    anchor: datetime
    timezone: str
    zone: ZoneInfo
    workflow: str | None
    """The workflow a tick starts (latest version), or None."""
    event_type: str | None
    """The CloudEvent type a tick publishes, or None."""
    business_key: str
    data: Mapping[str, Any] | TickData
    missed: MissedTicks
    max_catch_up: int
    description: str

    @property
    def target(self) -> str:
        """What a tick does, for people: ``start order`` or ``publish wave.due``."""
        return f"start {self.workflow}" if self.workflow else f"publish {self.event_type}"

    @property
    def when(self) -> str:
        """The cron expression with its zone, or the interval."""
        if self.cron is not None:
            return f"{self.cron} ({self.timezone})"
        return f"every {self.every}"

    def key_for(self, tick: datetime) -> str:
        """The business key (or subject) of ``tick`` (UTC); local times use the zone."""
        local = tick.astimezone(self.zone)
        return self.business_key.format(schedule=self.name, tick=tick, local=local)

    def data_for(self, tick: datetime) -> dict[str, Any]:
        """The start data or event data of ``tick``."""
        made = self.data(tick) if callable(self.data) else self.data
        return dict(made)


class Schedule:
    """Base class of schedules: subclass it and set the class attributes."""

    name: ClassVar[str | None] = None
    cron: ClassVar[str | None] = None
    every: ClassVar[timedelta | None] = None
    anchor: ClassVar[datetime] = DEFAULT_ANCHOR
    timezone: ClassVar[str] = "UTC"
    starts: ClassVar[type[Workflow[Any]] | str | None] = None
    publishes: ClassVar[str | None] = None
    business_key: ClassVar[str] = DEFAULT_BUSINESS_KEY
    data: ClassVar[Mapping[str, Any] | TickData | staticmethod[[datetime], Mapping[str, Any]]] = {}
    missed: ClassVar[str] = "latest"
    max_catch_up: ClassVar[int] = 100
    spec: ClassVar[ScheduleSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.spec = compile_schedule(cls)


def compile_schedule(cls: type[Schedule]) -> ScheduleSpec:
    """Validate a schedule class and build its spec; `DefinitionError` if it is broken."""
    name = cls.name
    where = f"schedule {name or cls.__qualname__}"
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DefinitionError(f"{where}: name must be 1-200 letters, digits, '.', '_' or '-'")
    if (cls.cron is None) == (cls.every is None):
        raise DefinitionError(f"{where}: give either cron or every")
    cron = cls.cron
    if cron is not None:
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise DefinitionError(
                f"{where}: cron {cron!r} must have five fields (minute hour day month weekday)"
            )
        if not croniter.is_valid(cron):
            raise DefinitionError(f"{where}: cron {cron!r} is not a valid cron expression")
    every = cls.every
    if every is not None and (not isinstance(every, timedelta) or every < MIN_INTERVAL):
        raise DefinitionError(f"{where}: every must be a timedelta of at least 1 second")
    anchor = cls.anchor
    if not isinstance(anchor, datetime) or anchor.tzinfo is None:
        raise DefinitionError(f"{where}: anchor must be a timezone-aware datetime")
    try:
        zone = ZoneInfo(cls.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        raise DefinitionError(
            f"{where}: unknown time zone {cls.timezone!r} (an IANA name such as 'Europe/Berlin')"
        ) from error
    workflow, event_type = _target(cls, where)
    business_key = cls.business_key
    _check_template(business_key, where)
    data = cls.data
    if isinstance(data, staticmethod):  # declared with @staticmethod in the class body
        data = data.__func__
    if callable(data):
        try:
            parameters = len(inspect.signature(data).parameters)
        except (TypeError, ValueError):
            parameters = -1  # a builtin without a signature: not a function of the tick
        if parameters != 1:
            raise DefinitionError(f"{where}: data(tick) takes the tick (a UTC datetime)")
    elif not isinstance(data, Mapping):
        raise DefinitionError(f"{where}: data must be a dict or a function of the tick")
    if cls.missed not in MISSED:
        raise DefinitionError(f"{where}: missed must be one of {', '.join(MISSED)}")
    if not isinstance(cls.max_catch_up, int) or not 1 <= cls.max_catch_up <= 10_000:
        raise DefinitionError(f"{where}: max_catch_up must be 1-10000")
    missed: MissedTicks = cls.missed  # checked just above
    return ScheduleSpec(
        name=name,
        cron=cron,
        every=every,
        anchor=anchor.astimezone(UTC),
        timezone=cls.timezone,
        zone=zone,
        workflow=workflow,
        event_type=event_type,
        business_key=business_key,
        data=data,
        missed=missed,
        max_catch_up=cls.max_catch_up,
        description=inspect.getdoc(cls) or "",
    )


def _target(cls: type[Schedule], where: str) -> tuple[str | None, str | None]:
    if (cls.starts is None) == (cls.publishes is None):
        raise DefinitionError(f"{where}: give either starts (a workflow) or publishes (a type)")
    if cls.publishes is not None:
        if not isinstance(cls.publishes, str) or not EVENT_TYPE_PATTERN.match(cls.publishes):
            raise DefinitionError(f"{where}: publishes {cls.publishes!r} is not an event type")
        if cls.publishes.startswith("conveyor."):
            raise DefinitionError(f"{where}: event types starting with 'conveyor.' are reserved")
        return None, cls.publishes
    starts = cls.starts
    if isinstance(starts, type) and issubclass(starts, Workflow):
        return starts.spec.name, None
    if isinstance(starts, str) and starts:
        return starts, None  # checked against the registry when the schedules load
    raise DefinitionError(f"{where}: starts must be a workflow class or a workflow name")


def _check_template(template: str, where: str) -> None:
    """The business key template may use {schedule}, {tick} and {local} (with a format)."""
    if not isinstance(template, str) or not template:
        raise DefinitionError(f"{where}: business_key must be a non-empty template")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        sample = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        key = template.format(schedule="s", tick=sample, local=sample)
    except (ValueError, KeyError, IndexError, AttributeError) as error:
        raise DefinitionError(
            f"{where}: business_key {template!r} is not a valid template: {error}"
        ) from error
    unknown = sorted(
        {f.split(".")[0].split("[")[0] for f in fields} - {"schedule", "tick", "local"}
    )
    if unknown:
        raise DefinitionError(f"{where}: business_key may use {{schedule}}, {{tick}}, {{local}}")
    if not key or len(key) > 200:
        raise DefinitionError(f"{where}: business_key must give 1-200 characters")
