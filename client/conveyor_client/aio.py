"""The asynchronous client of Conveyor's HTTP API.

.. code-block:: python

    async with AsyncConveyor("http://conveyor:8000", api_key) as conveyor:
        order = await conveyor.start("order", "o-1", data)
        async for instance in conveyor.instances(workflow="order", state="paid"):
            ...

Errors are the typed exceptions of :mod:`conveyor_client.errors`. Connection failures
and 503 answers are retried with backoff where that is safe (see
:mod:`conveyor_client.calls` for which calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from conveyor_client import calls
from conveyor_client.calls import (
    BulkAction,
    Call,
    DeadLetterFilters,
    InstanceFilters,
    ItemStatus,
    MigrationFilters,
)
from conveyor_client.exchange import (
    ClientSettings,
    gave_up,
    log_retry,
    read_answer,
    request_args,
    retry_after,
)
from conveyor_client.models import (
    BulkJob,
    BulkPreview,
    CancelResult,
    DeadLetter,
    HistoryEntry,
    Instance,
    JobItem,
    Migration,
    MigrationJob,
    MigrationReport,
    Page,
    Readiness,
    SendOutcome,
    Stats,
    Timer,
    Workflow,
    WorkflowSummary,
)
from conveyor_client.retrying import RetryPolicy, retry_after_error, retry_after_status

T = TypeVar("T")


class AsyncConveyor:
    """Calls one Conveyor API with one API key.

    ``retries`` more attempts after a lost connection or a 503, waiting ``backoff`` *
    2**n seconds (with jitter, at most ``max_backoff``). Give ``client`` to use an
    ``httpx.AsyncClient`` of your own (it is not closed here), or ``transport`` for the
    one made here. Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = ClientSettings(
            base_url,
            api_key,
            timeout,
            RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff),
        )
        self._own_client = client is None
        self._http = client or httpx.AsyncClient(transport=transport)

    def __repr__(self) -> str:
        return f"AsyncConveyor({self.settings.base_url!r})"

    async def __aenter__(self) -> AsyncConveyor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._http.aclose()

    async def request(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as its ``retry_safe`` allows) and read its answer."""
        policy = self.settings.policy
        attempt = 0
        while True:
            try:
                response = await self._http.request(**request_args(self.settings, call))
            except httpx.TransportError as error:
                wait = retry_after_error(policy, attempt, error, call.retry_safe)
                if wait is None:
                    raise gave_up(call, attempt + 1, error) from error
                log_retry(call, attempt, wait, type(error).__name__)
            else:
                wait = retry_after_status(
                    policy, attempt, response.status_code, call.retry_safe, retry_after(response)
                )
                if wait is None:
                    return read_answer(call, response)
                log_retry(call, attempt, wait, f"HTTP {response.status_code}")
            attempt += 1
            await asyncio.sleep(wait)

    async def _all(
        self, page: Callable[[str | None], Call[Page[T]]], cursor: str | None = None
    ) -> AsyncIterator[T]:
        while True:
            found = await self.request(page(cursor))
            for item in found.items:
                yield item
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    # ------------------------------------------------------------ health, workflows

    async def health(self) -> bool:
        """``GET /health``: the process answers."""
        return await self.request(calls.health())

    async def ready(self) -> Readiness:
        """``GET /ready``: PostgreSQL and Kafka checked (not ready is an answer)."""
        return await self.request(calls.ready())

    async def workflows(self) -> list[WorkflowSummary]:
        return await self.request(calls.workflows())

    async def workflow(self, name: str, version: int | None = None) -> Workflow:
        return await self.request(calls.workflow(name, version))

    async def diagram(
        self, name: str, version: int | None = None, *, instance_id: str | None = None
    ) -> str:
        """The Mermaid state diagram (an instance's current state highlighted)."""
        return await self.request(calls.diagram(name, version, instance_id))

    # ------------------------------------------------------------ instances

    async def start(
        self,
        workflow: str,
        business_key: str,
        data: Mapping[str, Any],
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Instance:
        """Start an instance (write key). Sent with an ``Idempotency-Key`` (a new one
        unless given), so a retried start answers the same instance."""
        return await self.request(
            calls.start(
                workflow, business_key, data, version=version, idempotency_key=idempotency_key
            )
        )

    async def get(self, instance_id: str) -> Instance:
        return await self.request(calls.get(instance_id))

    async def find(self, workflow: str, business_key: str) -> Instance:
        """The instance of ``workflow`` holding ``business_key`` (``earlier`` lists the
        ones that held it before)."""
        return await self.request(calls.find(workflow, business_key))

    async def instances_page(
        self,
        *,
        cursor: str | None = None,
        limit: int = calls.DEFAULT_PAGE_SIZE,
        **filters: Unpack[InstanceFilters],
    ) -> Page[Instance]:
        """One page of instances matching the filters (newest first)."""
        return await self.request(calls.instances_page(filters, cursor=cursor, limit=limit))

    def instances(
        self, *, page_size: int = calls.DEFAULT_PAGE_SIZE, **filters: Unpack[InstanceFilters]
    ) -> AsyncIterator[Instance]:
        """Every instance matching the filters, page after page (following cursors)."""
        return self._all(lambda c: calls.instances_page(filters, cursor=c, limit=page_size))

    async def send(
        self,
        instance_id: str,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> SendOutcome:
        """Send an event (write key) with id ``event_id`` (a new one unless given), so a
        retried send is a duplicate Conveyor recognises. A refusal raises
        :class:`~conveyor_client.errors.EventRejected` (409) or ``ValidationFailed`` (422)."""
        return await self.request(calls.send(instance_id, type, payload, event_id=event_id))

    async def history_page(
        self, instance_id: str, *, cursor: str | None = None, limit: int = calls.DEFAULT_PAGE_SIZE
    ) -> Page[HistoryEntry]:
        return await self.request(calls.history_page(instance_id, cursor=cursor, limit=limit))

    def history(
        self, instance_id: str, *, page_size: int = calls.DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[HistoryEntry]:
        """The instance's whole history in order."""
        return self._all(lambda c: calls.history_page(instance_id, cursor=c, limit=page_size))

    async def timers(self, instance_id: str) -> list[Timer]:
        return await self.request(calls.timers(instance_id))

    async def cancel(
        self, instance_id: str, *, reason: str = "", status_only: bool = False
    ) -> CancelResult:
        """Operator (admin key); idempotent, so retried."""
        return await self.request(calls.cancel(instance_id, reason=reason, status_only=status_only))

    async def retry(self, instance_id: str) -> SendOutcome:
        """Operator (admin key): re-apply the event that failed the instance."""
        return await self.request(calls.retry(instance_id))

    async def move(
        self, instance_id: str, state: str, *, reason: str = "", run_hooks: bool = False
    ) -> Instance:
        """Operator (admin key): put the instance into another declared state."""
        return await self.request(
            calls.move(instance_id, state, reason=reason, run_hooks=run_hooks)
        )

    async def stats(self, workflow: str | None = None) -> Stats:
        return await self.request(calls.stats(workflow))

    # ------------------------------------------------------------ dead letters

    async def dead_letters_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[DeadLetterFilters]
    ) -> Page[DeadLetter]:
        return await self.request(calls.dead_letters_page(filters, cursor=cursor, limit=limit))

    def dead_letters(
        self, *, page_size: int = 50, **filters: Unpack[DeadLetterFilters]
    ) -> AsyncIterator[DeadLetter]:
        """Every dead letter matching the filters, newest first."""
        return self._all(lambda c: calls.dead_letters_page(filters, cursor=c, limit=page_size))

    async def dead_letter(self, letter_id: int) -> DeadLetter:
        return await self.request(calls.dead_letter(letter_id))

    async def replay_dead_letter(
        self,
        letter_id: int,
        *,
        value: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        new_id: bool = False,
    ) -> DeadLetter:
        return await self.request(
            calls.replay_dead_letter(letter_id, value=value, data=data, new_id=new_id)
        )

    async def discard_dead_letter(self, letter_id: int, *, reason: str = "") -> DeadLetter:
        return await self.request(calls.discard_dead_letter(letter_id, reason=reason))

    # ------------------------------------------------------------ bulk actions

    async def bulk_preview(
        self,
        action: BulkAction,
        *,
        ids: list[str] | None = None,
        select_all: bool = False,
        reason: str = "",
        status_only: bool = False,
        event_type: str | None = None,
        payload: Mapping[str, Any] | None = None,
        **filters: Unpack[InstanceFilters],
    ) -> BulkPreview:
        """A dry run of a bulk action (admin key): the count and a sample."""
        return await self.request(
            calls.bulk_preview(
                action,
                filters,
                ids=ids,
                select_all=select_all,
                reason=reason,
                status_only=status_only,
                event_type=event_type,
                payload=payload,
            )
        )

    async def bulk(
        self,
        action: BulkAction,
        *,
        ids: list[str] | None = None,
        select_all: bool = False,
        reason: str = "",
        status_only: bool = False,
        event_type: str | None = None,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **filters: Unpack[InstanceFilters],
    ) -> BulkJob:
        """Create a bulk job (admin key) the workers apply; with an ``Idempotency-Key``
        (a new one unless given), so a retried creation answers the same job."""
        return await self.request(
            calls.bulk_create(
                action,
                filters,
                ids=ids,
                select_all=select_all,
                reason=reason,
                status_only=status_only,
                event_type=event_type,
                payload=payload,
                idempotency_key=idempotency_key,
            )
        )

    async def bulk_job(self, job_id: str) -> BulkJob:
        return await self.request(calls.bulk_job(job_id))

    def bulk_items(
        self, job_id: str, *, status: ItemStatus | None = None, page_size: int = 100
    ) -> AsyncIterator[JobItem]:
        return self._all(
            lambda c: calls.bulk_items_page(job_id, status=status, cursor=c, limit=page_size)
        )

    async def cancel_bulk_job(self, job_id: str) -> BulkJob:
        return await self.request(calls.cancel_bulk_job(job_id))

    # ------------------------------------------------------------ migrations

    async def migrations(self, workflow: str) -> list[Migration]:
        return await self.request(calls.migrations(workflow))

    async def migration_dry_run(
        self,
        workflow: str,
        from_version: int,
        to_version: int,
        filters: MigrationFilters | None = None,
        *,
        force: bool = False,
    ) -> MigrationReport:
        return await self.request(
            calls.migration_dry_run(workflow, from_version, to_version, filters, force=force)
        )

    async def migrate(
        self,
        workflow: str,
        from_version: int,
        to_version: int,
        filters: MigrationFilters | None = None,
        *,
        force: bool = False,
        idempotency_key: str | None = None,
    ) -> MigrationJob:
        """Create a migration job (admin key), with an ``Idempotency-Key``."""
        return await self.request(
            calls.migrate(
                workflow,
                from_version,
                to_version,
                filters,
                force=force,
                idempotency_key=idempotency_key,
            )
        )

    async def migration_job(self, job_id: str) -> MigrationJob:
        return await self.request(calls.migration_job(job_id))

    def migration_items(
        self, job_id: str, *, status: ItemStatus | None = None, page_size: int = 100
    ) -> AsyncIterator[JobItem]:
        return self._all(
            lambda c: calls.migration_items_page(job_id, status=status, cursor=c, limit=page_size)
        )

    async def cancel_migration_job(self, job_id: str) -> MigrationJob:
        return await self.request(calls.cancel_migration_job(job_id))


__all__ = ["AsyncConveyor"]
