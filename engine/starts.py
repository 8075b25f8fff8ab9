"""A start's pure part: the new instance row and what its start writes.

The runtime inserts what these describe (:meth:`engine.runtime.Runtime.start`); the test
kit (:mod:`engine.testing`) applies the same write set to its in-memory tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.decide import Decision, Rejection, initial_decision
from engine.errors import InstanceConflict, PayloadInvalid
from engine.model import Instance, InstanceStatus, StartResult
from engine.registry import WorkflowDefinition
from engine.replay import START_DATA
from engine.spec import WorkflowSpec
from engine.store.writeset import HistoryRow, WriteSet


@dataclass(frozen=True, slots=True)
class PreparedStart:
    """A start whose pure part (data validation, on-enter hooks) is done."""

    instance_id: uuid.UUID
    workflow: str
    version: int
    business_key: str
    decision: Decision
    idempotency_key: str | None
    source: str
    request_id: str | None
    now: datetime
    # The id of the request that asked for the start, recorded in the history row and the
    # state_changed message (see Runtime.start).
    event_id: str
    # The data the start was given, recorded in its history row (a migration's replay
    # starts from it, engine.replay).
    start_data: Mapping[str, Any]


async def prepare_start(
    definition: WorkflowDefinition,
    business_key: str,
    data: Mapping[str, Any],
    *,
    instance_id: uuid.UUID,
    now: datetime,
    idempotency_key: str | None,
    event_id: str | None,
    source: str,
    request_id: str | None,
) -> PreparedStart:
    """Decide a start: validate ``data`` and run the initial state's on-enter hooks.
    Raises PayloadInvalid when ``data`` fails the data schema (with its field errors)."""
    decision = await initial_decision(definition, data, event_id=str(instance_id), now=now)
    if isinstance(decision, Rejection):
        raise PayloadInvalid(decision.message, decision.field_errors)
    return PreparedStart(
        instance_id,
        definition.spec.name,
        definition.spec.version,
        business_key,
        decision,
        idempotency_key,
        source,
        request_id,
        now,
        event_id or str(instance_id),
        data,
    )


def record_start(writes: WriteSet, instance: Instance, start: PreparedStart) -> None:
    """A start's writes: its history row and ``state_changed`` message name the event that
    asked for it (``start.event_id``); its timers and outbound messages keep the ids that
    ``initial_decision`` derived from the instance id, which no other start shares (one
    CloudEvent may start several workflows, one Idempotency-Key serve several)."""
    decision = start.decision
    derived_id = decision.history.event_id
    event_type = decision.history.event_type
    writes.history(
        HistoryRow(
            instance.id,
            1,
            start.event_id,
            event_type,
            start.source,
            "started",
            {START_DATA: start.start_data},
            to_state=decision.to_state,
            transition=decision.transition,
            request_id=start.request_id,
        )
    )
    for timer in decision.timers_to_set:
        writes.set_timer(instance.id, derived_id, timer)
    writes.queue_outbound(instance, decision.outbound, start.request_id)
    writes.state_changed(
        instance,
        from_state=None,
        to_state=decision.to_state,
        status=InstanceStatus.ACTIVE.value,
        revision=1,
        event_id=start.event_id,
        event_type=event_type,
        request_id=start.request_id,
    )


def new_instance(start: PreparedStart) -> Instance:
    """The instance a start creates, as the database will hold it once inserted."""
    return Instance(
        id=start.instance_id,
        workflow=start.workflow,
        version=start.version,
        business_key=start.business_key,
        state=start.decision.to_state,
        data=start.decision.data,
        status=InstanceStatus.ACTIVE,
        revision=1,
        created_at=start.now,
        updated_at=start.now,
        state_entered_at=start.now,
        error=None,
    )


def start_row(start: PreparedStart) -> dict[str, Any]:
    """The new instance's row, as ``START_INSTANCES`` inserts it (see
    :meth:`~engine.store.writeset.WriteSet.start_values`)."""
    return {
        "id": start.instance_id,
        "workflow": start.workflow,
        "version": start.version,
        "business_key": start.business_key,
        "state": start.decision.to_state,
        "data": start.decision.data,
        "start_key": start.idempotency_key,
        "now": start.now,
    }


def reusable(
    spec: WorkflowSpec, status: str, start_key: str | None, idempotency_key: str | None
) -> bool:
    """May this start take over the key of the instance that holds it (with ``status``,
    started with ``start_key``): ended, a workflow version that allows it, and not the
    same start again (same idempotency key)?"""
    same_start = idempotency_key is not None and start_key == idempotency_key
    return (
        spec.key_reuse == "after_end"
        and not same_start
        and status in (InstanceStatus.COMPLETED.value, InstanceStatus.CANCELLED.value)
    )


def existing_start(
    instance: Instance, start_key: str | None, business_key: str, idempotency_key: str | None
) -> StartResult:
    """A start whose key is taken by ``instance`` (started with ``start_key``): the same
    start again (same idempotency key and business key) answers that instance, not
    created; anything else is an :class:`InstanceConflict`."""
    if idempotency_key is not None and start_key == idempotency_key:
        if instance.business_key != business_key:
            raise InstanceConflict(
                f"idempotency key {idempotency_key!r} was used to start "
                f"{instance.workflow} {instance.business_key!r}, not {business_key!r}"
            )
        return StartResult(instance, created=False)
    raise InstanceConflict(
        f"{instance.workflow} {business_key!r} already exists (instance {instance.id})"
    )


__all__ = [
    "PreparedStart",
    "existing_start",
    "new_instance",
    "record_start",
    "reusable",
    "start_row",
]
