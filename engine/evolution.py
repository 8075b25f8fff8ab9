"""Declaring migrations: how running instances of one workflow version move to another.

A migration is declared next to the workflows, like them a class validated when it is
defined::

    class OrderV1ToV2(Migration):
        source = OrderV1            # order v1
        target = Order              # order v2
        states = {"packing": "picking"}     # old state -> new state
        not_migratable = ("manual_review",)

        @staticmethod
        def upgrade(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "currency": data.get("currency", "EUR")}

Every state an instance of the source version can be running in (every non-final state)
must have somewhere to go: the state ``states`` maps it to, else the target's state of the
same name, else it must be listed in ``not_migratable`` (instances there are reported
``unmapped`` and never moved). A state maps to a running state of the target, never to a
final one: a migration does not end instances. Anything else is a `DefinitionError` naming
the migration and the state.

``upgrade`` is pure: it gets a copy of the instance's data (JSON, as stored) and returns the
data for the target version, which is then validated against the target's ``data_schema``
(an instance whose data fails is reported ``invalid_data`` and not moved). Without one,
the data must already fit the target.

Migrations are found where workflows are (``CONVEYOR_WORKFLOW_MODULES``) and kept by the
registry: :meth:`engine.registry.Registry.migration`. Applying them is
:mod:`engine.migrate`; checking one by replaying history is :mod:`engine.replay`.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.decisions import FieldError
from engine.dsl import Workflow
from engine.errors import DefinitionError
from engine.input_validation import validate_input
from engine.spec import WorkflowSpec

Upgrade = Callable[[dict[str, Any]], Mapping[str, Any]]
"""A pure function from the source version's data to the target version's data."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True, slots=True)
class MigrationSpec:
    """A validated migration: where each running state of the source version goes."""

    name: str
    workflow: str
    from_version: int
    to_version: int
    source: WorkflowSpec
    target: WorkflowSpec
    source_definition: type[Workflow[Any]]
    target_definition: type[Workflow[Any]]
    state_map: Mapping[str, str]  # every running source state that migrates -> target state
    not_migratable: frozenset[str]
    upgrade: Upgrade | None
    description: str

    def __repr__(self) -> str:
        return f"<MigrationSpec {self.label}>"

    @property
    def label(self) -> str:
        """``order v1 -> v2 (order-v1-to-v2)``: how messages name the migration."""
        return f"{self.workflow} v{self.from_version} -> v{self.to_version} ({self.name})"

    def target_state(self, state: str) -> str | None:
        """Where an instance in source ``state`` goes; None if it does not migrate."""
        return self.state_map.get(state)

    def upgraded(self, data: Mapping[str, Any]) -> Mapping[str, Any] | tuple[FieldError, ...]:
        """``data`` (the source version's, as stored) as the target version's, validated
        against its ``data_schema``; field errors (or the upgrade's own error) if not."""
        try:
            upgraded = (
                dict(data) if self.upgrade is None else self.upgrade(copy.deepcopy(dict(data)))
            )
        except Exception as error:  # the user's function: its failure is this instance's
            return (FieldError("", f"upgrade raised {type(error).__name__}: {error}"),)
        if not isinstance(upgraded, Mapping):
            return (FieldError("", f"upgrade returned {type(upgraded).__name__}, not a dict"),)
        checked = validate_input(self.target.data_schema, upgraded)
        if isinstance(checked, tuple):
            return checked
        dumped: Mapping[str, Any] = checked.model_dump(mode="json")
        return dumped

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workflow": self.workflow,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "description": self.description,
            "states": dict(self.state_map),
            "not_migratable": sorted(self.not_migratable),
            "upgrades_data": self.upgrade is not None,
        }


class Migration:
    """Base class of migration declarations; subclasses are validated when defined.

    Set ``source`` and ``target`` (two versions of one workflow), optionally ``states``
    (old state -> new state; a state of the same name maps by itself), ``not_migratable``
    (source states whose instances stay where they are), ``upgrade`` (a static method
    from old data to new) and ``name`` (default ``<workflow>-v<from>-to-v<to>``).
    """

    source: ClassVar[type[Workflow[Any]]]
    target: ClassVar[type[Workflow[Any]]]
    states: ClassVar[Mapping[str, str]] = {}
    not_migratable: ClassVar[tuple[str, ...] | frozenset[str]] = ()
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    spec: ClassVar[MigrationSpec]

    @staticmethod
    def upgrade(data: dict[str, Any]) -> Mapping[str, Any]:
        """Override (a static method) to reshape the data for the target version; by
        default it is kept as it is."""
        return data

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.spec = compile_migration(cls)


def compile_migration(cls: type[Migration]) -> MigrationSpec:
    """Validate a migration class and build its spec; `DefinitionError` if it is broken."""
    where = f"migration {cls.__qualname__}"
    source = _workflow(cls, "source", where)
    target = _workflow(cls, "target", where)
    s, t = source.spec, target.spec
    if s.name != t.name:
        raise DefinitionError(
            f"{where}: source is workflow '{s.name}' and target '{t.name}'; a migration moves "
            "instances between versions of one workflow"
        )
    if s.version == t.version:
        raise DefinitionError(f"{where}: source and target are both {s.label}")
    name = cls.name or f"{s.name}-v{s.version}-to-v{t.version}"
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DefinitionError(
            f"{where}: name {name!r} must be 1-200 letters, digits, '.', '_' or '-'"
        )
    label = f"migration {name} ({s.label} -> v{t.version})"

    def fail(message: str, state: str | None = None) -> DefinitionError:
        at = f" (state '{state}')" if state else ""
        return DefinitionError(f"{label}{at}: {message}")

    explicit = cls.states
    if not isinstance(explicit, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in explicit.items()
    ):
        raise fail("`states` must map old state names to new state names (str -> str)")
    excluded = cls.not_migratable
    if isinstance(excluded, str) or not isinstance(excluded, Iterable):
        raise fail("`not_migratable` must be a tuple of state names")
    if not all(isinstance(n, str) for n in excluded):
        raise fail("`not_migratable` must be a tuple of state names")
    excluded = frozenset(excluded)
    running = [n for n in s.states if n not in s.finals]
    for old in (*explicit, *excluded):
        if old not in s.states:
            known = ", ".join(s.states)
            raise fail(f"{s.label} declares no state '{old}'; its states: {known}", old)
        if old in s.finals:
            raise fail(
                f"'{old}' is final in {s.label}: its instances have ended and are never migrated",
                old,
            )
    both = excluded & set(explicit)
    if both:
        raise fail("both mapped in `states` and listed in `not_migratable`", sorted(both)[0])
    state_map: dict[str, str] = {}
    for old in running:
        if old in excluded:
            continue
        new = explicit.get(old, old if old in t.states else None)
        if new is None:
            raise fail(
                f"not mapped: v{t.version} has no state '{old}'; map it in `states` "
                f"(e.g. {{'{old}': '<a state of v{t.version}>'}}) or list it in "
                "`not_migratable`",
                old,
            )
        if new not in t.states:
            known = ", ".join(n for n in t.states if n not in t.finals)
            raise fail(
                f"maps to '{new}', which {t.label} does not declare; its states: {known}", old
            )
        if new in t.finals:
            raise fail(
                f"maps to '{new}', a final state of {t.label}: a migration does not end "
                "instances; map it to a running state (cancel them instead)",
                old,
            )
        state_map[old] = new
    upgrade: Upgrade | None = getattr(cls, "upgrade", None)
    if upgrade is Migration.upgrade:
        upgrade = None  # not overridden: the data is kept as it is
    if upgrade is not None and not _takes_data(upgrade):
        raise fail(
            "`upgrade` must be a function of the data alone (a @staticmethod taking and "
            "returning a dict)"
        )
    return MigrationSpec(
        name=name,
        workflow=s.name,
        from_version=s.version,
        to_version=t.version,
        source=s,
        target=t,
        source_definition=source,
        target_definition=target,
        state_map=state_map,
        not_migratable=excluded,
        upgrade=upgrade,
        description=cls.description or (cls.__doc__ or "").strip(),
    )


def _takes_data(function: object) -> bool:
    """Callable with one positional argument (the data)."""
    if not callable(function):
        return False
    try:
        inspect.signature(function).bind({})
    except (TypeError, ValueError):
        return False
    return True


def _workflow(cls: type[Migration], attribute: str, where: str) -> type[Workflow[Any]]:
    value = getattr(cls, attribute, None)
    if not (isinstance(value, type) and issubclass(value, Workflow) and value is not Workflow):
        raise DefinitionError(f"{where}: set `{attribute}` to a workflow class")
    return value


__all__ = ["Migration", "MigrationSpec", "Upgrade", "compile_migration"]
