"""Which workflow definitions this process knows, keyed by (name, version)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from engine.dsl import Workflow
from engine.errors import ConfigurationError, DefinitionError, NotFound, UnknownWorkflow
from engine.evolution import Migration, MigrationSpec
from engine.schedules import Schedule, ScheduleSpec

DEFAULT_WORKFLOW_MODULES: tuple[str, ...] = ("workflows",)

WorkflowDefinition = type[Workflow[Any]]


class Registry:
    """Workflow definitions by name and version; ``get(name)`` returns the latest version.

    New instances start on the latest version; running instances keep theirs.
    """

    def __init__(self) -> None:
        self._definitions: dict[str, dict[int, WorkflowDefinition]] = {}
        self._migrations: dict[tuple[str, int, int], MigrationSpec] = {}
        self._schedules: dict[str, ScheduleSpec] = {}

    def register(self, definition: WorkflowDefinition) -> WorkflowDefinition:
        """Add ``definition``; registering the same class twice is a no-op."""
        spec = definition.spec
        versions = self._definitions.setdefault(spec.name, {})
        existing = versions.get(spec.version)
        if existing is not None and existing is not definition:
            raise DefinitionError(
                f"{spec.label}: defined twice ({_qualified(existing)} and "
                f"{_qualified(definition)}); bump `version` on one of them"
            )
        versions[spec.version] = definition
        return definition

    def register_migration(self, migration: type[Migration]) -> MigrationSpec:
        """Add a migration (and the two versions it joins, if not registered yet); one
        migration per (workflow, from version, to version)."""
        spec = migration.spec
        self.register(spec.source_definition)
        self.register(spec.target_definition)
        key = (spec.workflow, spec.from_version, spec.to_version)
        existing = self._migrations.get(key)
        if existing is not None and existing is not spec:
            raise DefinitionError(
                f"{spec.label}: declared twice (also as '{existing.name}'); keep one migration "
                "per pair of versions"
            )
        self._migrations[key] = spec
        return spec

    def register_schedule(self, schedule: type[Schedule]) -> ScheduleSpec:
        """Add a schedule (one per name; the same class twice is a no-op). A schedule that
        starts a workflow registers it too when given as a class."""
        spec = schedule.spec
        if isinstance(schedule.starts, type):
            self.register(schedule.starts)
        existing = self._schedules.get(spec.name)
        if existing is not None and existing is not spec:
            raise DefinitionError(f"schedule {spec.name}: declared twice; names are unique")
        self._schedules[spec.name] = spec
        return spec

    def schedules(self) -> tuple[ScheduleSpec, ...]:
        """Declared schedules, by name."""
        return tuple(self._schedules[name] for name in sorted(self._schedules))

    def schedule(self, name: str) -> ScheduleSpec:
        """The schedule named ``name``, else `UnknownSchedule` (404)."""
        found = self._schedules.get(name)
        if found is None:
            raise UnknownSchedule(f"no schedule named {name!r}")
        return found

    def check_schedules(self) -> None:
        """Every schedule that starts a workflow by name must find it registered."""
        for spec in self._schedules.values():
            if spec.workflow is not None and spec.workflow not in self:
                raise DefinitionError(
                    f"schedule {spec.name}: starts workflow '{spec.workflow}', which is not "
                    "registered (check its name and CONVEYOR_WORKFLOW_MODULES)"
                )

    def migration(self, name: str, from_version: int, to_version: int) -> MigrationSpec:
        """The migration of workflow ``name`` from one version to another, else
        :class:`UnknownMigration` listing those declared."""
        found = self._migrations.get((name, from_version, to_version))
        if found is None:
            declared = ", ".join(m.label for m in self.migrations(name)) or "none"
            raise UnknownMigration(
                f"no migration of {name} from v{from_version} to v{to_version} is declared; "
                f"declared for {name}: {declared}"
            )
        return found

    def migrations(self, name: str | None = None) -> tuple[MigrationSpec, ...]:
        """Declared migrations (of workflow ``name``), by workflow, from and to version."""
        return tuple(
            spec for key, spec in sorted(self._migrations.items()) if name in (None, key[0])
        )

    def get(self, name: str, version: int | None = None) -> WorkflowDefinition:
        """The definition ``name`` at ``version`` (default: the latest); else `UnknownWorkflow`."""
        versions = self._definitions.get(name)
        if not versions:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise UnknownWorkflow(f"unknown workflow '{name}'; registered: {known}")
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            have = ", ".join(str(v) for v in sorted(versions))
            raise UnknownWorkflow(
                f"workflow '{name}' has no version {version}; registered versions: {have}"
            ) from None

    def versions(self, name: str) -> tuple[int, ...]:
        """Registered versions of ``name``, ascending (empty if unknown)."""
        return tuple(sorted(self._definitions.get(name, {})))

    def all(self) -> tuple[WorkflowDefinition, ...]:
        """Every definition, by name then version."""
        return tuple(
            versions[v]
            for name in sorted(self._definitions)
            for versions in (self._definitions[name],)
            for v in sorted(versions)
        )

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __iter__(self) -> Iterator[WorkflowDefinition]:
        return iter(self.all())

    def __len__(self) -> int:
        return sum(len(v) for v in self._definitions.values())


def load_workflows(module_names: Sequence[str] = DEFAULT_WORKFLOW_MODULES) -> Registry:
    """Import each module (and every submodule of a package) and register the workflow
    classes defined in it. An unknown module raises `ConfigurationError`."""
    registry = Registry()
    for module_name in module_names:
        for module in _import_tree(module_name):
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Workflow)
                    and value is not Workflow
                    and value.__module__ == module.__name__
                ):
                    registry.register(value)
                elif (
                    isinstance(value, type)
                    and issubclass(value, Migration)
                    and value is not Migration
                    and value.__module__ == module.__name__
                ):
                    registry.register_migration(value)
                elif (
                    isinstance(value, type)
                    and issubclass(value, Schedule)
                    and value is not Schedule
                    and value.__module__ == module.__name__
                ):
                    registry.register_schedule(value)
    registry.check_schedules()
    return registry


def _import_tree(module_name: str) -> Iterator[ModuleType]:
    module = _import(module_name)
    yield module
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{module_name}."):
            yield _import(info.name)


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (
            module_name == error.name or module_name.startswith(f"{error.name}.")
        ):
            raise ConfigurationError(
                f"workflow module '{module_name}' not found; check the list of workflow "
                "modules (a dotted module path importable from the working directory)"
            ) from error
        raise ConfigurationError(
            f"workflow module '{module_name}' failed to import: {error}"
        ) from error


class UnknownMigration(NotFound):
    title = "Unknown migration"


class UnknownSchedule(NotFound):
    title = "Unknown schedule"


def _qualified(definition: WorkflowDefinition) -> str:
    return f"{definition.__module__}.{definition.__qualname__}"
