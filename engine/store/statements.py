"""The SQL of the hot path, set-based so that one statement serves 1 or 1,000 events.

Executed on the asyncpg connection under SQLAlchemy's pool; asyncpg prepares and caches
each statement per connection. Arrays travel as typed parameters; JSON travels as text
and is cast in SQL.
"""

from __future__ import annotations

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

# Run after the lock is held: in READ COMMITTED this statement's snapshot sees whatever
# the previous lock holder committed (processed event ids, fired or cancelled timers).
SEEN_EVENTS_AND_LIVE_TIMERS = """
select 'e' as kind, event_id as id from inbox where event_id = any($1::text[])
union all
select 't', id::text from timers where id = any($2::uuid[])
"""

RESOLVE_BUSINESS_KEYS = """
select i.id, i.workflow, i.business_key
from instances i
join unnest($1::text[], $2::text[]) as k(workflow, business_key)
  on i.workflow = k.workflow and i.business_key = k.business_key
"""

# Everything a batch of decisions writes, in one statement. The caller computes the net
# effect per instance, so no row is touched twice by this statement.
APPLY = """
with
upd as (
  update instances as i
  set state = u.state, data = u.data::jsonb, status = u.status, revision = u.revision,
      updated_at = $1, state_entered_at = coalesce(u.entered, i.state_entered_at),
      error = u.error::jsonb
  from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[],
              $7::timestamptz[], $8::text[])
       as u(id, state, data, status, revision, entered, error)
  where i.id = u.id
  returning 1
),
hist as (
  insert into history (instance_id, revision, event_id, event_type, source, from_state,
                       to_state, transition, payload, outcome, reason, request_id, occurred_at)
  select h.instance_id, h.revision, h.event_id, h.event_type, h.source, h.from_state,
         h.to_state, h.transition, h.payload::jsonb, h.outcome, h.reason, h.request_id, $1
  from unnest($9::uuid[], $10::int8[], $11::text[], $12::text[], $13::text[], $14::text[],
              $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[])
       with ordinality
       as h(instance_id, revision, event_id, event_type, source, from_state, to_state,
            transition, payload, outcome, reason, request_id, ord)
  order by h.ord
  returning 1
),
inb as (
  insert into inbox (event_id, instance_id, outcome, processed_at)
  select e.event_id, e.instance_id, e.outcome, $1
  from unnest($21::text[], $22::uuid[], $23::text[]) as e(event_id, instance_id, outcome)
  returning 1
),
outb as (
  insert into outbox (message_id, instance_id, topic, key, headers, value, created_at)
  select o.message_id, o.instance_id, o.topic, o.key, o.headers::jsonb, o.value, $1
  from unnest($24::uuid[], $25::uuid[], $26::text[], $27::bytea[], $28::text[], $29::bytea[])
       with ordinality as o(message_id, instance_id, topic, key, headers, value, ord)
  order by o.ord
  returning 1
),
tdel as (
  delete from timers t
  using unnest($30::uuid[], $31::text[]) as d(instance_id, name)
  where t.instance_id = d.instance_id and t.name = d.name
  returning 1
),
tset as (
  insert into timers (id, instance_id, name, state, due_at, created_at)
  select s.id, s.instance_id, s.name, s.state, s.due_at, $1
  from unnest($32::uuid[], $33::uuid[], $34::text[], $35::text[], $36::timestamptz[])
       as s(id, instance_id, name, state, due_at)
  on conflict (instance_id, name) do update
    set id = excluded.id, state = excluded.state, due_at = excluded.due_at,
        claimed_until = null, created_at = excluded.created_at
  returning 1
)
select (select count(*) from upd) as updated, (select count(*) from inb) as recorded,
       (select count(*) from outb) as published
"""

INSERT_INSTANCE = f"""
insert into instances (id, workflow, version, business_key, state, data, status, revision,
                       start_key, created_at, updated_at, state_entered_at)
values ($1, $2, $3, $4, $5, $6::text::jsonb, $7, 1, $8, $9, $9, $9)
on conflict do nothing
returning {INSTANCE_COLUMNS}
"""

FIND_FOR_START = f"""
select {INSTANCE_COLUMNS}, start_key from instances
where workflow = $1 and (business_key = $2 or ($3::text is not null and start_key = $3))
order by (start_key is not distinct from $3) desc
limit 1
"""

GET_INSTANCE = f"select {INSTANCE_COLUMNS} from instances where id = $1"

FIND_INSTANCE = (
    f"select {INSTANCE_COLUMNS} from instances where workflow = $1 and business_key = $2"
)

# The scheduler's claim: due timers not leased by another scheduler, skipping rows that
# another scheduler is claiming right now.
CLAIM_DUE_TIMERS = """
with due as (
  select id from timers
  where due_at <= $1 and (claimed_until is null or claimed_until < $1)
  order by due_at
  limit $2
  for update skip locked
)
update timers t set claimed_until = $3
from due where t.id = due.id
returning t.id, t.instance_id, t.name, t.state, t.due_at
"""

NEXT_TIMER_DUE = "select min(due_at) from timers where claimed_until is null or claimed_until < $1"
