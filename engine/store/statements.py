"""The SQL of the hot path, set-based so that one statement serves 1 or 1,000 events.

Executed on the asyncpg connection under SQLAlchemy's pool; asyncpg prepares and caches
each statement per connection. Arrays travel as typed parameters; JSON travels as text
and is cast in SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# ``:name`` (lower case), but not a ``::type`` cast, and nothing inside a string literal.
_PARAMETER = re.compile(r"(?P<literal>'(?:[^']|'')*')|(?<![:\w]):(?P<name>[a-z_][a-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL written with named parameters (``:name``), run with asyncpg's positional ones
    (``$n``): ``args`` puts values given by name in the order the SQL wants."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def named(cls, text: str) -> Statement:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group("literal"):
                return match.group("literal")  # a string literal is left as it is
            name = match.group("name")
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        numbered = _PARAMETER.sub(number, text)
        if "--" in text or "$$" in text:
            raise ValueError("named statements take no comments or dollar quotes")
        return cls(numbered, tuple(names))

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments; every name, and only those, must be given."""
        if len(values) != len(self.names):
            unknown = sorted(set(values) - set(self.names))
            raise KeyError(f"unknown parameters {unknown}; this statement takes {self.names}")
        return [values[name] for name in self.names]


INSTANCE_COLUMNS = (
    "id, workflow, version, business_key, state, data, status, revision, created_at,"
    " updated_at, state_entered_at, error"
)

# Lock the instances of a batch in id order: every writer locks in the same order, so
# two batches touching the same instances cannot deadlock.
LOCK_INSTANCES = f"""
select {INSTANCE_COLUMNS}
from instances where id = any($1::uuid[])
order by id
for update
"""

# Batches skip instances that another transaction holds (an operator's long transaction,
# a slow batch): their triggers are deferred and applied alone, waiting for the lock, so
# one busy instance never holds up a batch of others.
LOCK_INSTANCES_SKIP_LOCKED = LOCK_INSTANCES.replace("for update", "for update skip locked")

# Event ids are deduplicated per instance: the inbox is keyed by (instance_id, event_id),
# so a redelivery to the same instance is a duplicate while the same id sent to another
# instance is another event (CloudEvents ids are unique per source only, and no client
# can squat the ids of another's events). The "seen" reads below take the triggers'
# (instance id, event id) pairs as two parallel arrays and answer the processed pairs the
# same way (seen_instances[i], seen_events[i]).
_SEEN_PAIRS = """
select i.instance_id, i.event_id from inbox i
join unnest({instances}::uuid[], {events}::text[]) as k(instance_id, event_id)
  on i.instance_id = k.instance_id and i.event_id = k.event_id
"""

# The same lock plus "which of these (instance, event id) pairs were processed", in one
# round trip, for batches of events only ($1: the instance ids to lock; $2, $3: each
# trigger's target and event id). Its inbox read uses the statement's snapshot, which may
# predate a lock wait; a pair committed meanwhile then fails the inbox's primary key at
# write time, and the runtime retries the batch, which then sees it as a duplicate.
LOCK_INSTANCES_WITH_SEEN = f"""
select locked.*, seen.seen_instances, seen.seen_events
from (select {INSTANCE_COLUMNS} from instances where id = any($1::uuid[])
      order by id for update) as locked,
     (select coalesce(array_agg(s.instance_id), '{{}}') as seen_instances,
             coalesce(array_agg(s.event_id), '{{}}') as seen_events
      from ({_SEEN_PAIRS.format(instances="$2", events="$3")}) as s) as seen
"""

LOCK_INSTANCES_WITH_SEEN_SKIP_LOCKED = LOCK_INSTANCES_WITH_SEEN.replace(
    "for update", "for update skip locked"
)

# Run after the lock is held: in READ COMMITTED this statement's snapshot sees whatever
# the previous lock holder committed (processed event ids, fired or cancelled timers).
# ($1, $2: each trigger's target and event id; $3: the timer ids.) Processed pairs come
# back as kind 'e' with their instance, live timers as kind 't'.
SEEN_EVENTS_AND_LIVE_TIMERS = f"""
select 'e' as kind, s.instance_id, s.event_id as id
from ({_SEEN_PAIRS.format(instances="$1", events="$2")}) as s
union all
select 't', instance_id, id::text from timers where id = any($3::uuid[])
"""

# A business key names the instance that holds it: after a key reuse, the newest one
# (``not key_released``: at most one per workflow and key, by ``instances_key_holder``).
RESOLVE_BUSINESS_KEYS = """
select i.id, i.workflow, i.business_key
from instances i
join unnest($1::text[], $2::text[]) as k(workflow, business_key)
  on i.workflow = k.workflow and i.business_key = k.business_key and not i.key_released
"""

# Everything a batch of decisions writes, in one statement. Each table's rows travel as
# one JSON array (orjson on our side, jsonb_to_recordset on the server's): a handful of
# parameters whatever the batch size. The caller computes the net effect per instance, so
# no row is touched twice by this statement. APPLY updates existing instances
# (:instances); START_INSTANCES inserts new ones from :instances and writes the rest only
# for those it inserted. Parameters are named (see ``Statement``): the write set fills
# them by name (``WriteSet.values``), so no positional contract spans two files.
_UPDATE_INSTANCES = """
changed as (
  update instances as i
  set state = u.state, data = u.data, status = u.status, revision = u.revision,
      updated_at = :now, state_entered_at = coalesce(u.entered, i.state_entered_at),
      error = u.error
  from jsonb_to_recordset(:instances::jsonb)
       as u(id uuid, state text, data jsonb, status text, revision int8, entered timestamptz,
            error jsonb)
  where i.id = u.id
  returning i.id
)"""

# A taken business key or idempotency key skips its row (the caller then finds out
# whether it is the same start again or a conflict).
_INSERT_INSTANCES = """
changed as (
  insert into instances (id, workflow, version, business_key, state, data, status,
                         revision, start_key, created_at, updated_at, state_entered_at)
  select r.id, r.workflow, r.version, r.business_key, r.state, r.data, 'active', 1,
         r.start_key, r.now, r.now, r.now
  from jsonb_to_recordset(:instances::jsonb)
       as r(id uuid, workflow text, version int, business_key text, state text, data jsonb,
            start_key text, now timestamptz)
  on conflict do nothing
  returning id
)"""

_WRITE_REST = """,
hist as (
  insert into history (instance_id, revision, event_id, event_type, source, from_state,
                       to_state, transition, payload, outcome, reason, request_id, occurred_at)
  select h.instance_id, h.revision, h.event_id, h.event_type, h.source, h.from_state,
         h.to_state, h.transition, h.payload, h.outcome, h.reason, h.request_id, :now
  from rows from (jsonb_to_recordset(:history::jsonb)
         as (instance_id uuid, revision int8, event_id text, event_type text, source text,
             from_state text, to_state text, transition text, payload jsonb, outcome text,
             reason text, request_id text)) with ordinality
       as h(instance_id, revision, event_id, event_type, source, from_state, to_state,
            transition, payload, outcome, reason, request_id, ord)
  {only_new_h}
  order by h.ord
  returning 1
),
inb as (
  insert into inbox (event_id, instance_id, outcome, processed_at)
  select e.event_id, e.instance_id, e.outcome, :now
  from jsonb_to_recordset(:inbox::jsonb) as e(event_id text, instance_id uuid, outcome text)
  {only_new_e}
  returning 1
),
outb as (
  insert into outbox (message_id, instance_id, topic, key, headers, value, created_at)
  select o.message_id, o.instance_id, o.topic, convert_to(o.key, 'UTF8'), o.headers,
         convert_to(o.value, 'UTF8'), :now
  from rows from (jsonb_to_recordset(:outbox::jsonb)
         as (message_id uuid, instance_id uuid, topic text, key text, headers jsonb,
             value text)) with ordinality
       as o(message_id, instance_id, topic, key, headers, value, ord)
  {only_new_o}
  order by o.ord
  returning 1
),
tdel as (
  delete from timers t
  using jsonb_to_recordset(:timer_deletes::jsonb) as d(instance_id uuid, name text)
  where t.instance_id = d.instance_id and t.name = d.name
  returning 1
),
tset as (
  insert into timers (id, instance_id, name, state, due_at, created_at)
  select s.id, s.instance_id, s.name, s.state, s.due_at, :now
  from jsonb_to_recordset(:timer_sets::jsonb)
       as s(id uuid, instance_id uuid, name text, state text, due_at timestamptz)
  {only_new_s}
  on conflict (instance_id, name) do update
    set id = excluded.id, state = excluded.state, due_at = excluded.due_at,
        claimed_until = null, created_at = excluded.created_at
  returning 1
)
select array(select id from changed) as changed, (select count(*) from inb) as recorded,
       (select count(*) from outb) as published
"""


def _only_new(alias: str) -> str:
    return f"where {alias}.instance_id in (select id from changed)"


APPLY = Statement.named(
    "with"
    + _UPDATE_INSTANCES
    + _WRITE_REST.format(only_new_h="", only_new_e="", only_new_o="", only_new_s="")
)

# New instances, many at once, with their history, outbox messages and timers: a single
# statement, so it needs no explicit transaction (one round trip for the whole batch).
START_INSTANCES = Statement.named(
    "with"
    + _INSERT_INSTANCES
    + _WRITE_REST.format(
        only_new_h=_only_new("h"),
        only_new_e=_only_new("e"),
        only_new_o=_only_new("o"),
        only_new_s=_only_new("s"),
    )
)

# After a start found its key taken: the instance of the same start (same idempotency
# key), else the one holding the business key ($1 workflow, $2 business key, $3
# idempotency key or null).
FIND_FOR_START = f"""
select * from (
  select {INSTANCE_COLUMNS}, start_key, true as same_start from instances
  where workflow = $1 and $3::text is not null and start_key = $3
  union all
  select {INSTANCE_COLUMNS}, start_key, false from instances
  where workflow = $1 and business_key = $2 and not key_released
) as found
order by same_start desc
limit 1
"""

# An operator's cancel runs a failed or retrying instance's cancel route (engine.operations).
SET_ACTIVE = "update instances set status = 'active' where id = $1"
SET_STATUS = "update instances set status = $2 where id = $1"

GET_INSTANCE = f"select {INSTANCE_COLUMNS} from instances where id = $1"

GET_INSTANCES = f"select {INSTANCE_COLUMNS} from instances where id = any($1::uuid[])"

FIND_INSTANCE = (
    f"select {INSTANCE_COLUMNS} from instances"
    " where workflow = $1 and business_key = $2 and not key_released"
)

# The scheduler's claim: due timers not leased by another scheduler, skipping rows that
# another scheduler is claiming right now, oldest first.
# A failed instance's timers wait for the operator's retry: firing them would only be
# refused (its events are), and they fire once it is active again.
# The ids travel as an array, so the update finds its rows by primary key whatever the
# table's size (joined to a CTE instead, the planner may hash the whole table: finding
# 1,000 claimed rows took ~90 ms at 100,000 timers, ~2.5 ms by key).
CLAIM_DUE_TIMERS = """
update timers t set claimed_until = $3
where t.id = any(array(
  select d.id from timers d
  where d.due_at <= $1 and (d.claimed_until is null or d.claimed_until < $1)
    and not exists (
      select 1 from instances i where i.id = d.instance_id and i.status = 'failed'
    )
  order by d.due_at
  limit $2
  for update of d skip locked
))
returning t.id, t.instance_id, t.name, t.state, t.due_at
"""

# When the next timer that is not due yet ($1: now) comes due: an idle scheduler wakes
# then rather than a poll interval later. (Overdue timers that wait, a failed instance's,
# are not its business.)
NEXT_TIMER_DUE = "select min(due_at) from timers where due_at > $1"
