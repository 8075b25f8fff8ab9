"""Operating on migration jobs once created (:mod:`engine.migrate` creates and applies
them): stopping one."""

from __future__ import annotations

import uuid

from engine import bulk, migrate
from engine.runtime import Runtime
from engine.store import jobs
from engine.store.database import driver_transaction
from engine.store.jobs import Job


async def cancel(runtime: Runtime, job_id: uuid.UUID) -> Job:
    """Stop a running migration job: the items it has not reached are skipped (``job
    cancelled``; their instances stay on the source version); a batch being applied
    finishes first. A finished job is returned unchanged. MigrationNotFound if none."""
    await migrate.get(runtime, job_id)
    async with driver_transaction(runtime.db) as conn:
        return await jobs.cancel(conn, job_id, runtime.clock(), bulk.JOB_CANCELLED)


__all__ = ["cancel"]
