"""The migrations and the declared schema (``engine.store.schema``) agree.

Two checks, each on a fresh schema migrated by ``engine.store.migrations.upgrade``:

* Alembic's autogenerate comparison (what ``alembic check`` runs), with the options
  ``alembic/env.py`` uses: tables, columns, types, nullability, server defaults, identity,
  primary keys, unique constraints, foreign keys and indexes (columns and uniqueness).
* The catalogue: the declared metadata is created (``create_all``) in a second fresh
  schema and PostgreSQL's own definitions of both schemas are compared, which also covers
  what Alembic does not compare: check constraints, partial index predicates
  (``postgresql_where``), operator classes and ``on delete`` actions, as PostgreSQL
  itself prints them.

Only the test's own schema is looked at (its ``search_path``), never another test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, Text, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import DefaultClause

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import VERSION_TABLE, context_options
from engine.store.schema import metadata
from tests.conftest import unique

Catalog = dict[tuple[str, ...], tuple[Any, ...]]

COLUMNS = """
select table_name, column_name, data_type, udt_name, is_nullable, column_default,
       is_identity, identity_generation
from information_schema.columns where table_schema = current_schema()
"""

CONSTRAINTS = """
select c.conrelid::regclass::text, c.conname, c.contype::text, pg_get_constraintdef(c.oid)
from pg_constraint c where c.connamespace = current_schema()::regnamespace
"""

INDEXES = """
select tablename, indexname, indexdef from pg_indexes where schemaname = current_schema()
"""


async def differences(settings: Settings, declared: MetaData) -> list[Any]:
    """Alembic's autogenerate differences between ``settings``' schema and ``declared``."""

    def compare(sync_conn: Connection) -> list[Any]:
        options = context_options(settings.database_schema)
        context = MigrationContext.configure(sync_conn, opts=options)
        return list(compare_metadata(context, declared))

    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await db.dispose()


async def catalog(settings: Settings) -> Catalog:
    """PostgreSQL's definitions of the tables of ``settings``' schema, without the schema
    name (so that two schemas compare) and without Alembic's version table."""
    schema = settings.database_schema
    assert schema is not None

    def bare(value: Any) -> Any:
        return value.replace(f"{schema}.", "") if isinstance(value, str) else value

    found: Catalog = {}
    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
            for kind, query in (("column", COLUMNS), ("constraint", CONSTRAINTS)):
                for row in await conn.execute(text(query)):
                    table, name, *rest = (bare(v) for v in row)
                    found[(kind, table, name)] = tuple(rest)
            for table, name, definition in await conn.execute(text(INDEXES)):
                found[("index", table, name)] = (bare(definition),)
    finally:
        await db.dispose()
    return {key: value for key, value in found.items() if key[1] != VERSION_TABLE}


@asynccontextmanager
async def declared_schema(base: Settings, declared: MetaData) -> AsyncIterator[Settings]:
    """A fresh schema made by ``declared.create_all`` (no migrations); dropped afterwards."""
    settings = base.model_copy(update={"database_schema": unique("d")})
    admin = create_engine(base, pool_size=1)
    db = create_engine(settings, pool_size=1)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'create schema "{settings.database_schema}"'))
        async with db.begin() as conn:
            await conn.run_sync(declared.create_all)
        yield settings
    finally:
        await db.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{settings.database_schema}" cascade'))
        await admin.dispose()


def drifted() -> MetaData:
    """The declared schema with drift of every kind the checks are meant to catch."""
    copy = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(copy)
    timers = copy.tables["timers"]
    timers.append_column(Column("note", Text, nullable=True))  # a column no migration adds
    Index("timers_state", timers.c.state)  # an index no migration makes
    # A unique constraint a migration makes, no longer declared.
    (unique_name,) = [c for c in timers.constraints if c.name == "timers_instance_name"]
    timers.constraints.discard(unique_name)
    outbox = copy.tables["outbox"]
    outbox.c.headers.server_default = DefaultClause(text("'{}'::jsonb"))
    instances = copy.tables["instances"]
    (ended,) = [i for i in instances.indexes if i.name == "instances_ended"]
    ended.dialect_options["postgresql"]["where"] = text("status = 'completed'")
    (status,) = [c for c in instances.constraints if c.name == "instances_status"]
    instances.constraints.discard(status)
    return copy


def summary(found: list[Any]) -> set[tuple[str, str, str | None]]:
    """Alembic's differences as (operation, table, column or constraint or index)."""
    named: set[tuple[str, str, str | None]] = set()
    for diff in found:
        if isinstance(diff, list):  # changes of one column: (kind, schema, table, column, ...)
            named.update((kind, table, column) for kind, _, table, column, *_ in diff)
        elif diff[0] in ("add_column", "remove_column"):
            named.add((diff[0], diff[2], diff[3].name))
        else:  # add_/remove_ index, constraint, fk, table
            item = diff[1]
            named.add((diff[0], getattr(item, "table", item).name, item.name))
    return named


async def test_alembic_finds_no_difference_between_migrations_and_declared_schema(
    settings: Settings,
) -> None:
    assert await differences(settings, metadata) == []


async def test_migrated_catalogue_is_the_declared_one(
    settings: Settings, base_settings: Settings
) -> None:
    migrated = await catalog(settings)
    async with declared_schema(base_settings, metadata) as declared:
        made = await catalog(declared)
    assert {key[1] for key in migrated} == set(metadata.tables)
    assert set(made) - set(migrated) == set()
    assert set(migrated) - set(made) == set()
    assert {key: made[key] for key in made if made[key] != migrated[key]} == {}
    # The parts Alembic does not compare are in what was compared.
    assert migrated[("index", "instances", "instances_ended")] == (
        "CREATE INDEX instances_ended ON instances USING btree (updated_at, id)"
        " WHERE (status = ANY (ARRAY['completed'::text, 'cancelled'::text]))",
    )
    assert migrated[("constraint", "history", "history_instance_id_fkey")] == (
        "f",
        "FOREIGN KEY (instance_id) REFERENCES instances(id) ON DELETE CASCADE",
    )


async def test_the_checks_report_drift(settings: Settings, base_settings: Settings) -> None:
    """The checks above are not vacuous: drift in the declaration shows in them."""
    assert summary(await differences(settings, drifted())) == {
        ("add_column", "timers", "note"),
        ("add_index", "timers", "timers_state"),
        ("remove_constraint", "timers", "timers_instance_name"),
        ("modify_default", "outbox", "headers"),
    }

    migrated = await catalog(settings)
    async with declared_schema(base_settings, drifted()) as declared:
        made = await catalog(declared)
    changed = {key for key in made.keys() & migrated.keys() if made[key] != migrated[key]}
    assert ("index", "instances", "instances_ended") in changed
    assert ("column", "outbox", "headers") in changed
    assert ("constraint", "instances", "instances_status") in set(migrated) - set(made)
    assert ("constraint", "timers", "timers_instance_name") in set(migrated) - set(made)
    assert ("column", "timers", "note") in set(made) - set(migrated)
    assert ("index", "timers", "timers_state") in set(made) - set(migrated)
