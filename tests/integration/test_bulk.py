"""Bulk actions as durable jobs: the target set is fixed at creation, batches are applied
and settled in one transaction each, and no instance gets the action twice, even when a
batch dies half-way or two runners share the job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import bulk, cli_instances
from engine.bulk_runner import MAX_BATCH_ERRORS, JobRunner
from engine.errors import InvalidRequest, UnknownWorkflow
from engine.model import Event, Instance, InstanceStatus
from engine.runtime import Runtime
from engine.store.jobs import Job
from tests import flows
from tests.integration.test_runtime import FakeClock, order_data, registry
from workflows.order import Order


@pytest.fixture(autouse=True)
def _reset_failures() -> Iterator[None]:
    flows.FAILURES.clear()
    yield
    flows.FAILURES.clear()


async def counters(runtime: Runtime, prefix: str, n: int) -> list[Instance]:
    return [
        (await runtime.start("test.counter", f"{prefix}-{i}", {"key": f"{prefix}-{i}"})).instance
        for i in range(n)
    ]


async def scalar(db: AsyncEngine, query: str, **params: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(text(query), params)).scalar_one()


async def rows(db: AsyncEngine, query: str, **params: Any) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(text(query), params)).all())


def cancel_request(**filters: Any) -> bulk.BulkRequest:
    return bulk.BulkRequest("cancel", bulk.parse_filter(filters), reason="bulk test")


async def run_to_end(runtime: Runtime, job: Job, batch_size: int = 7) -> Job:
    await JobRunner(runtime, batch_size=batch_size).run_job(job.id)
    return await bulk.get(runtime, job.id)


async def cancel_events_per_instance(db: AsyncEngine, ids: list[uuid.UUID]) -> dict[Any, int]:
    found = await rows(
        db,
        "select instance_id, count(*) from history where event_type = 'conveyor.cancel'"
        " and instance_id = any(:ids) group by instance_id",
        ids=ids,
    )
    return {r[0]: r[1] for r in found}


async def test_a_dry_run_counts_and_samples_the_matching_instances_and_writes_nothing(
    runtime: Runtime, db: AsyncEngine
) -> None:
    made = await counters(runtime, "D", 25)
    preview = await bulk.preview(runtime, cancel_request(workflow="test.counter"))
    assert preview.count == 25
    sample = [i.id for i in preview.sample]
    assert len(set(sample)) == bulk.SAMPLE_SIZE
    assert set(sample) <= {i.id for i in made}
    assert await scalar(db, "select count(*) from jobs") == 0
    assert await scalar(db, "select count(*) from job_items") == 0


def test_an_empty_or_unknown_filter_is_refused_with_the_names() -> None:
    with pytest.raises(InvalidRequest, match='"all": true'):
        bulk.parse_filter({})
    with pytest.raises(InvalidRequest, match="unknown filter 'colour'"):
        bulk.parse_filter({"workflow": "order", "colour": "red"})
    with pytest.raises(InvalidRequest, match="status"):
        bulk.parse_filter({"status": "sleeping"})
    assert bulk.parse_filter({"all": True}).is_empty()


async def test_data_filters_need_the_workflow_and_its_declared_fields(runtime: Runtime) -> None:
    await runtime.start("order", "O-1", order_data("O-1"))
    other = {**order_data("O-2"), "customer_id": "C-9"}
    await runtime.start("order", "O-2", other)
    with pytest.raises(InvalidRequest, match="data needs workflow"):
        await bulk.preview(runtime, cancel_request(data={"customer_id": "C-9"}))
    with pytest.raises(InvalidRequest, match="declares no field 'colour'"):
        await bulk.preview(runtime, cancel_request(workflow="order", data={"colour": "red"}))
    with pytest.raises(UnknownWorkflow):
        await bulk.preview(runtime, cancel_request(workflow="nope", data={"a": "b"}))
    matched = await bulk.preview(
        runtime, cancel_request(workflow="order", data={"customer_id": "C-9"})
    )
    assert [i.business_key for i in matched.sample] == ["O-2"]
    by_state = await bulk.preview(runtime, cancel_request(workflow="order", state="placed"))
    assert by_state.count == 2


async def test_bulk_cancel_cancels_each_instance_once_and_skips_with_reasons(
    runtime: Runtime, db: AsyncEngine
) -> None:
    made = await counters(runtime, "C", 30)
    for instance in made[:5]:
        await runtime.send(Event("counter.close", f"close-{instance.id}", instance_id=instance.id))
    job, created = await bulk.create(
        runtime, cancel_request(workflow="test.counter"), request_id="req-1"
    )
    assert created
    assert (job.total, job.status) == (30, "running")
    # Instances started after creation are not targets: the set was fixed.
    late = await counters(runtime, "L", 2)
    done = await run_to_end(runtime, job)
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 25, 5, 0)
    assert bulk.progress(done) == 1.0
    assert done.finished_at is not None
    skipped = await bulk.items(runtime, job.id, status="skipped")
    assert {i.instance_id for i in skipped} == {i.id for i in made[:5]}
    assert all("completed" in (i.reason or "") for i in skipped)
    ids = [i.id for i in made]
    assert set((await cancel_events_per_instance(db, ids)).values()) == {1}
    assert len(await cancel_events_per_instance(db, ids)) == 25
    for instance in late:
        assert (await runtime.get(instance.id)).status is InstanceStatus.ACTIVE
    # Running it again changes nothing: every item is settled.
    again = await run_to_end(runtime, job)
    assert (again.succeeded, again.skipped) == (25, 5)
    history = await runtime.history(made[10].id)
    assert history[-1].request_id == "req-1"
    assert history[-1].reason == "bulk test"


async def test_an_order_cancelled_in_bulk_takes_its_cancel_route(runtime: Runtime) -> None:
    started = (await runtime.start("order", "O-7", order_data("O-7"))).instance
    job, _ = await bulk.create(runtime, cancel_request(ids=[str(started.id)]))
    done = await run_to_end(runtime, job)
    assert done.succeeded == 1
    (item,) = await bulk.items(runtime, job.id)
    assert item.reason == "cancelled (transition operator_cancel_unpaid)"
    after = await runtime.get(started.id)
    assert (after.state, after.status) == ("cancelled", InstanceStatus.CANCELLED)


async def test_a_second_cancel_job_skips_instances_already_cancelled(runtime: Runtime) -> None:
    await counters(runtime, "A", 4)
    first, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    await run_to_end(runtime, first)
    second, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    done = await run_to_end(runtime, second)
    assert (done.succeeded, done.skipped) == (0, 4)
    assert {i.reason for i in await bulk.items(runtime, second.id)} == {"already cancelled"}


async def test_bulk_retry_resumes_failed_instances_and_skips_the_others(
    runtime: Runtime,
) -> None:
    made = await counters(runtime, "R", 6)
    for instance in made[:4]:
        flows.FAILURES[instance.business_key] = 3  # every attempt of the policy fails
        outcome = await runtime.send(
            Event("counter.label", f"label-{instance.id}", {"label": "x"}, instance.id)
        )
        assert outcome.status == "failed"
    flows.FAILURES[made[3].business_key] = 3  # this one fails its retry too
    request = bulk.BulkRequest("retry", bulk.parse_filter({"workflow": "test.counter"}))
    job, _ = await bulk.create(runtime, request)
    done = await run_to_end(runtime, job, batch_size=4)
    assert (done.succeeded, done.skipped, done.failed) == (3, 2, 1)
    for instance in made[:3]:
        after = await runtime.get(instance.id)
        assert (after.state, after.status, after.data["label"]) == (
            "labelled",
            InstanceStatus.ACTIVE,
            "x",
        )
    (failed,) = await bulk.items(runtime, job.id, status="failed")
    assert failed.instance_id == made[3].id
    assert "failed again" in (failed.reason or "")
    skipped = await bulk.items(runtime, job.id, status="skipped")
    assert all("only failed or retrying" in (i.reason or "") for i in skipped)


async def test_bulk_send_event_applies_once_and_maps_rejections_and_failures(
    runtime: Runtime, db: AsyncEngine
) -> None:
    made = await counters(runtime, "E", 6)
    closed = made[0]
    await runtime.send(Event("counter.close", "close-0", instance_id=closed.id))
    flows.FAILURES[made[1].business_key] = 1  # fails once: retried at once by its policy
    flows.FAILURES[made[2].business_key] = 5  # fails every attempt the policy allows
    request = bulk.BulkRequest(
        "send_event",
        bulk.parse_filter({"workflow": "test.counter"}),
        event_type="counter.label",
        payload={"label": "bulk"},
    )
    job, _ = await bulk.create(runtime, request)
    done = await run_to_end(runtime, job, batch_size=10)
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 4, 1, 1)
    (skipped,) = await bulk.items(runtime, job.id, status="skipped")
    assert skipped.instance_id == closed.id
    (failed,) = await bulk.items(runtime, job.id, status="failed")
    assert failed.instance_id == made[2].id
    assert "exploded" in (failed.reason or "")
    assert (await runtime.get(made[2].id)).status is InstanceStatus.FAILED
    for instance in (made[1], *made[3:]):
        assert (await runtime.get(instance.id)).data["label"] == "bulk"
    applied = await rows(
        db,
        "select instance_id from history where event_id like 'bulk:%' and outcome = 'applied'",
    )
    assert sorted(r[0] for r in applied) == sorted(i.id for i in (made[1], *made[3:]))


class CrashingRunner(JobRunner):
    """Dies (like a kill -9) in the middle of its second batch, after applying it."""

    def __init__(self, runtime: Runtime, **options: Any) -> None:
        super().__init__(runtime, **options)
        self.batches = 0

    async def _each(self, conn: Any, job: Job, ids: Any) -> Any:
        settled = await super()._each(conn, job, ids)
        self.batches += 1
        if self.batches == 2:
            raise SystemExit("crash before commit")
        return settled


async def test_a_batch_that_dies_before_its_commit_is_applied_again_by_the_next_runner(
    runtime: Runtime, db: AsyncEngine
) -> None:
    made = await counters(runtime, "K", 20)
    job, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    with pytest.raises(SystemExit):
        await CrashingRunner(runtime, batch_size=6).run_job(job.id)
    halfway = await bulk.get(runtime, job.id)
    assert (halfway.status, halfway.done) == ("running", 6)
    active = await scalar(db, "select count(*) from instances where status = 'active'")
    assert active == 14  # the second batch's cancels were rolled back with it
    done = await run_to_end(runtime, job, batch_size=6)
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 20, 0, 0)
    per_instance = await cancel_events_per_instance(db, [i.id for i in made])
    assert per_instance == {i.id: 1 for i in made}


async def test_runners_sharing_a_job_apply_each_instance_once(
    runtime: Runtime, db: AsyncEngine
) -> None:
    made = await counters(runtime, "S", 60)
    job, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    await asyncio.gather(*(JobRunner(runtime, batch_size=5).run_job(job.id) for _ in range(4)))
    done = await bulk.get(runtime, job.id)
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 60, 0, 0)
    per_instance = await cancel_events_per_instance(db, [i.id for i in made])
    assert per_instance == {i.id: 1 for i in made}


async def test_a_cancelled_job_skips_what_it_had_not_reached(runtime: Runtime) -> None:
    await counters(runtime, "X", 10)
    job, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    runner = JobRunner(runtime, batch_size=4)
    assert await runner.run_batch(job) == 4
    stopped = await bulk.cancel(runtime, job.id)
    assert (stopped.status, stopped.succeeded, stopped.skipped) == ("cancelled", 4, 6)
    assert stopped.finished_at is not None
    assert await runner.run_batch(job) == 0
    reasons = {i.reason for i in await bulk.items(runtime, job.id, status="skipped")}
    assert reasons == {bulk.JOB_CANCELLED}
    assert (await bulk.cancel(runtime, job.id)).status == "cancelled"  # unchanged


async def test_creating_again_with_an_idempotency_key_finds_the_same_job(
    runtime: Runtime,
) -> None:
    await counters(runtime, "I", 3)
    request = cancel_request(workflow="test.counter")
    first, created = await bulk.create(runtime, request, idempotency_key="key-1")
    again, created_again = await bulk.create(runtime, request, idempotency_key="key-1")
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    with pytest.raises(bulk.JobKeyReused):
        await bulk.create(runtime, cancel_request(state="open"), idempotency_key="key-1")


async def test_a_job_larger_than_the_cap_is_refused_and_nothing_is_written(
    runtime: Runtime, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await counters(runtime, "B", 4)
    monkeypatch.setattr(bulk, "MAX_JOB_ITEMS", 3)
    with pytest.raises(bulk.JobTooLarge, match="more than 3"):
        await bulk.create(runtime, cancel_request(workflow="test.counter"))
    assert await scalar(db, "select count(*) from jobs") == 0


async def test_an_empty_job_completes_on_its_first_round(runtime: Runtime) -> None:
    job, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    assert job.total == 0
    done = await run_to_end(runtime, job)
    assert (done.status, bulk.progress(done)) == ("completed", 1.0)


async def test_events_for_a_workflow_no_longer_deployed_are_skipped_as_orphaned(
    runtime: Runtime, db: AsyncEngine
) -> None:
    made = await counters(runtime, "U", 3)
    request = bulk.BulkRequest(
        "send_event",
        bulk.parse_filter({"workflow": "test.counter"}),
        event_type="counter.tick",
    )
    job, _ = await bulk.create(runtime, request)
    # A runner whose registry lacks the counter workflow: its planning raises per event.
    without = Runtime(db, registry(Order), topic_prefix=runtime.topics.prefix, clock=runtime.clock)
    done = await run_to_end(without, job)
    # Orphaned instances: each event is refused as orphaned (never an error), item by item.
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 0, 3, 0)
    reasons = {i.reason for i in await bulk.items(runtime, job.id, status="skipped")}
    assert len(reasons) == 1
    assert "not deployed" in (reasons.pop() or "")
    for instance in made:
        assert (await runtime.get(instance.id)).data["count"] == 0


class BrokenRunner(JobRunner):
    """Every batch fails for a reason of its own (a bug, say)."""

    async def _each(self, conn: Any, job: Job, ids: Any) -> Any:
        raise RuntimeError("broken batch")


async def test_a_job_whose_batches_keep_failing_is_marked_failed_with_the_error(
    runtime: Runtime,
) -> None:
    await counters(runtime, "F", 3)
    job, _ = await bulk.create(runtime, cancel_request(workflow="test.counter"))
    runner = BrokenRunner(runtime)
    for _ in range(MAX_BATCH_ERRORS - 1):
        with pytest.raises(RuntimeError, match="broken batch"):
            await runner.run_job(job.id)
    assert (await bulk.get(runtime, job.id)).status == "running"
    await runner.run_job(job.id)
    failed = await bulk.get(runtime, job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error["error"] == "RuntimeError: broken batch"
    assert failed.done == 0


async def test_runners_racing_on_a_failing_send_event_settle_each_item_once_with_its_outcome(
    runtime: Runtime, db: AsyncEngine
) -> None:
    # The action fails and its retry policy has a backoff: each instance becomes
    # "retrying" after one attempt. Whichever runner claims an item holds it (and its
    # instance) until it is settled with that outcome: no other runner applies the event
    # again meanwhile and settles it "already applied" or "parked".
    made = await counters(runtime, "R", 24)
    for instance in made:
        flows.FAILURES[instance.business_key] = 10
    request = bulk.BulkRequest(
        "send_event",
        bulk.parse_filter({"workflow": "test.counter"}),
        event_type="counter.slow_label",
        payload={"label": "bulk"},
    )
    job, _ = await bulk.create(runtime, request)
    await asyncio.gather(*(JobRunner(runtime, batch_size=3).run_job(job.id) for _ in range(4)))
    done = await bulk.get(runtime, job.id)
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 0, 0, 24)
    reasons = {i.reason for i in await bulk.items(runtime, job.id, status="failed")}
    assert len(reasons) == 24
    assert all("the instance is retrying" in (r or "") for r in reasons)
    for instance in made:
        current = await runtime.get(instance.id)
        assert current.status is InstanceStatus.RETRYING
        assert current.error is not None
        assert current.error["attempts"] == 1
        assert flows.FAILURES[instance.business_key] == 9  # one attempt only
    attempts = await rows(
        db,
        "select instance_id, count(*) from history where event_id like 'bulk:%'"
        " group by instance_id",
    )
    assert {r[0]: r[1] for r in attempts} == {i.id: 1 for i in made}
    parked = await scalar(db, "select count(*) from parked_events")
    assert parked == 0


async def test_a_failing_send_event_settles_its_item_in_the_batch_that_claimed_it(
    runtime: Runtime,
) -> None:
    # The retry policy runs inside the batch's transaction: when the batch commits, the
    # item is already settled (nothing is left pending for another runner to claim).
    (instance,) = await counters(runtime, "L", 1)
    flows.FAILURES[instance.business_key] = 10
    request = bulk.BulkRequest(
        "send_event",
        bulk.parse_filter({"ids": [str(instance.id)]}),
        event_type="counter.slow_label",
        payload={"label": "bulk"},
    )
    job, _ = await bulk.create(runtime, request)
    assert await JobRunner(runtime).run_batch(job) == 1
    after = await bulk.get(runtime, job.id)
    assert (after.status, after.failed, after.done) == ("running", 1, 1)
    assert await bulk.items(runtime, job.id, status="pending") == []
    assert await JobRunner(runtime).run_batch(job) == 0
    assert (await bulk.get(runtime, job.id)).status == "completed"


async def test_a_job_skips_instances_that_no_longer_match_its_filter(
    runtime: Runtime, clock: FakeClock, db: AsyncEngine
) -> None:
    started = [
        (await runtime.start("order", f"M-{i}", order_data(f"M-{i}"))).instance for i in range(4)
    ]
    clock.advance(timedelta(days=3))
    request = cancel_request(workflow="order", state="placed", in_state_longer_than="P2D")
    job, _ = await bulk.create(runtime, request)
    assert job.total == 4
    # Meanwhile one order's payment starts: it is no longer "placed" for more than 2 days.
    moved = started[0]
    await runtime.send(
        Event(
            "payment.initiated",
            "pay-M-0",
            payload={"payment_id": "P", "provider": "x"},
            instance_id=moved.id,
        )
    )
    done = await run_to_end(runtime, job)
    assert (done.status, done.succeeded, done.skipped, done.failed) == ("completed", 3, 1, 0)
    (skipped,) = await bulk.items(runtime, job.id, status="skipped")
    assert (skipped.instance_id, skipped.reason) == (moved.id, bulk.NO_LONGER_MATCHES)
    current = await runtime.get(moved.id)
    assert (current.status, current.state) == (InstanceStatus.ACTIVE, "payment_pending")
    per_instance = await cancel_events_per_instance(db, [i.id for i in started])
    assert per_instance == {i.id: 1 for i in started[1:]}


async def test_a_send_event_job_skips_instances_that_no_longer_match_its_filter(
    runtime: Runtime,
) -> None:
    made = await counters(runtime, "N", 3)
    request = bulk.BulkRequest(
        "send_event",
        bulk.parse_filter({"workflow": "test.counter", "status": "active"}),
        event_type="counter.tick",
    )
    job, _ = await bulk.create(runtime, request)
    await runtime.send(Event("counter.close", "close-N-0", instance_id=made[0].id))
    done = await run_to_end(runtime, job)
    assert (done.succeeded, done.skipped, done.failed) == (2, 1, 0)
    (skipped,) = await bulk.items(runtime, job.id, status="skipped")
    assert (skipped.instance_id, skipped.reason) == (made[0].id, bulk.NO_LONGER_MATCHES)
    assert (await runtime.get(made[1].id)).data["count"] == 1


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"in_state_longer_than": "P999999999D"}, "in_state_longer_than: must be positive"),
        ({"in_state_longer_than": "P36501D"}, "at most 100 years"),
        ({"in_state_longer_than": "PT0S"}, "in_state_longer_than: must be positive"),
        ({"in_state_longer_than": 3600}, "in_state_longer_than: must be an ISO 8601 duration"),
        ({"created_after": "0001-01-01T00:00:00+14:00"}, "created_after: is out of range"),
        ({"updated_before": "2026-01-31"}, "updated_before: must be an ISO 8601 date-time"),
        ({"created_before": 1767225600}, "created_before: must be an ISO 8601 date-time"),
    ],
)
def test_durations_and_date_times_are_checked_like_the_query_parameters(
    raw: dict[str, Any], names: str
) -> None:
    for texts in (False, True):
        if texts and not all(isinstance(v, str) for v in raw.values()):
            continue
        with pytest.raises(InvalidRequest, match=names):
            bulk.parse_filter(raw, texts=texts)


def test_a_filter_keeps_its_durations_and_date_times_through_the_jobs_spec() -> None:
    parsed = bulk.parse_filter(
        {"in_state_longer_than": "P1DT12H", "created_after": "2026-01-01T02:00:00+02:00"}
    )
    assert parsed.in_state_longer_than == timedelta(days=1, hours=12)
    assert parsed.created_after == datetime(2026, 1, 1, tzinfo=UTC)
    request = bulk.BulkRequest("cancel", parsed)
    stored = request.spec()["filter"]
    assert stored == {"in_state_longer_than": "P1DT12H", "created_after": "2026-01-01T00:00:00Z"}
    assert bulk.BulkFilter.model_validate(stored) == parsed


def test_a_reserved_event_type_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="reserved"):
        bulk.BulkRequest(
            "send_event", bulk.parse_filter({"all": True}), event_type="conveyor.cancel"
        )


async def test_the_cli_marks_a_job_failed_when_its_batches_keep_failing(
    runtime: Runtime, db: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await runtime.start("order", "F-1", order_data("F-1"))
    request = cancel_request(workflow="order", data={"customer_id": "C-1"})
    job, _ = await bulk.create(runtime, request)
    # A CLI whose registry lacks the order workflow cannot rebuild the job's data filter:
    # every batch fails, for a reason of its own (not a transient one).
    without = Runtime(
        db, registry(flows.Counter), topic_prefix=runtime.topics.prefix, clock=runtime.clock
    )
    followed = await cli_instances._follow(without, job)
    assert followed.status == "failed"
    assert followed.error is not None
    assert followed.error["batches_failed"] == MAX_BATCH_ERRORS
    assert "UnknownWorkflow" in followed.error["error"]
    err = capsys.readouterr().err
    assert err.count("batch failed: UnknownWorkflow") == MAX_BATCH_ERRORS - 1
    assert "job failed: UnknownWorkflow" in err
    assert (await runtime.get((await bulk.items(runtime, job.id))[0].instance_id)).status is (
        InstanceStatus.ACTIVE
    )
