"""The synchronous client of Conveyor's HTTP API: :class:`Conveyor` has the methods of
:class:`~conveyor_client.aio.AsyncConveyor`, blocking, with iterators instead of async
iterators.

.. code-block:: python

    with Conveyor("http://conveyor:8000", api_key) as conveyor:
        order = conveyor.start("order", "o-1", data)
        for instance in conveyor.instances(workflow="order", state="paid"):
            ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
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


class Conveyor:
    """Calls one Conveyor API with one API key.

    ``retries`` more attempts after a lost connection or a 503, waiting ``backoff`` *
    2**n seconds (with jitter, at most ``max_backoff``). Give ``client`` to use an
    ``httpx.Client`` of your own (it is not closed here), or ``transport`` for the
    one made here. Use it as a context manager, or call :meth:`close`.
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
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.settings = ClientSettings(
            base_url,
            api_key,
            timeout,
            RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff),
        )
        self._own_client = client is None
        self._http = client or httpx.Client(transport=transport)

    def __repr__(self) -> str:
        return f"Conveyor({self.settings.base_url!r})"

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    def request(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as its ``retry_safe`` allows) and read its answer."""
        policy = self.settings.policy
        attempt = 0
        while True:
            try:
                response = self._http.request(**request_args(self.settings, call))
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
            time.sleep(wait)

    def _all(
        self, page: Callable[[str | None], Call[Page[T]]], cursor: str | None = None
    ) -> Iterator[T]:
        while True:
            found = self.request(page(cursor))
            yield from found.items
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    # ------------------------------------------------------------ health, workflows

    def health(self) -> bool:
        """``GET /health``: the process answers."""
        return self.request(calls.health())

    def ready(self) -> Readiness:
        """``GET /ready``: PostgreSQL and Kafka checked (not ready is an answer)."""
        return self.request(calls.ready())

    def workflows(self) -> list[WorkflowSummary]:
        return self.request(calls.workflows())

    def workflow(self, name: str, version: int | None = None) -> Workflow:
        return self.request(calls.workflow(name, version))

    def diagram(
        self, name: str, version: int | None = None, *, instance_id: str | None = None
    ) -> str:
        """The Mermaid state diagram (an instance's current state highlighted)."""
        return self.request(calls.diagram(name, version, instance_id))

    # ------------------------------------------------------------ instances

    def start(
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
        return self.request(
            calls.start(
                workflow, business_key, data, version=version, idempotency_key=idempotency_key
            )
        )

    def get(self, instance_id: str) -> Instance:
        return self.request(calls.get(instance_id))

    def find(self, workflow: str, business_key: str) -> Instance:
        """The instance of ``workflow`` holding ``business_key`` (``earlier`` lists the
        ones that held it before)."""
        return self.request(calls.find(workflow, business_key))

    def instances_page(
        self,
        *,
        cursor: str | None = None,
        limit: int = calls.DEFAULT_PAGE_SIZE,
        **filters: Unpack[InstanceFilters],
    ) -> Page[Instance]:
        """One page of instances matching the filters (newest first)."""
        return self.request(calls.instances_page(filters, cursor=cursor, limit=limit))

    def instances(
        self, *, page_size: int = calls.DEFAULT_PAGE_SIZE, **filters: Unpack[InstanceFilters]
    ) -> Iterator[Instance]:
        """Every instance matching the filters, page after page (following cursors)."""
        return self._all(lambda c: calls.instances_page(filters, cursor=c, limit=page_size))

    def send(
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
        return self.request(calls.send(instance_id, type, payload, event_id=event_id))

    def history_page(
        self, instance_id: str, *, cursor: str | None = None, limit: int = calls.DEFAULT_PAGE_SIZE
    ) -> Page[HistoryEntry]:
        return self.request(calls.history_page(instance_id, cursor=cursor, limit=limit))

    def history(
        self, instance_id: str, *, page_size: int = calls.DEFAULT_PAGE_SIZE
    ) -> Iterator[HistoryEntry]:
        """The instance's whole history in order."""
        return self._all(lambda c: calls.history_page(instance_id, cursor=c, limit=page_size))

    def timers(self, instance_id: str) -> list[Timer]:
        return self.request(calls.timers(instance_id))

    def cancel(
        self, instance_id: str, *, reason: str = "", status_only: bool = False
    ) -> CancelResult:
        """Operator (admin key); idempotent, so retried."""
        return self.request(calls.cancel(instance_id, reason=reason, status_only=status_only))

    def retry(self, instance_id: str) -> SendOutcome:
        """Operator (admin key): re-apply the event that failed the instance."""
        return self.request(calls.retry(instance_id))

    def move(
        self, instance_id: str, state: str, *, reason: str = "", run_hooks: bool = False
    ) -> Instance:
        """Operator (admin key): put the instance into another declared state."""
        return self.request(calls.move(instance_id, state, reason=reason, run_hooks=run_hooks))

    def stats(self, workflow: str | None = None) -> Stats:
        return self.request(calls.stats(workflow))

    # ------------------------------------------------------------ dead letters

    def dead_letters_page(
        self, *, cursor: str | None = None, limit: int = 50, **filters: Unpack[DeadLetterFilters]
    ) -> Page[DeadLetter]:
        return self.request(calls.dead_letters_page(filters, cursor=cursor, limit=limit))

    def dead_letters(
        self, *, page_size: int = 50, **filters: Unpack[DeadLetterFilters]
    ) -> Iterator[DeadLetter]:
        """Every dead letter matching the filters, newest first."""
        return self._all(lambda c: calls.dead_letters_page(filters, cursor=c, limit=page_size))

    def dead_letter(self, letter_id: int) -> DeadLetter:
        return self.request(calls.dead_letter(letter_id))

    def replay_dead_letter(
        self,
        letter_id: int,
        *,
        value: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        new_id: bool = False,
    ) -> DeadLetter:
        return self.request(
            calls.replay_dead_letter(letter_id, value=value, data=data, new_id=new_id)
        )

    def discard_dead_letter(self, letter_id: int, *, reason: str = "") -> DeadLetter:
        return self.request(calls.discard_dead_letter(letter_id, reason=reason))

    # ------------------------------------------------------------ bulk actions

    def bulk_preview(
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
        return self.request(
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

    def bulk(
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
        return self.request(
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

    def bulk_job(self, job_id: str) -> BulkJob:
        return self.request(calls.bulk_job(job_id))

    def bulk_items(
        self, job_id: str, *, status: ItemStatus | None = None, page_size: int = 100
    ) -> Iterator[JobItem]:
        return self._all(
            lambda c: calls.bulk_items_page(job_id, status=status, cursor=c, limit=page_size)
        )

    def cancel_bulk_job(self, job_id: str) -> BulkJob:
        return self.request(calls.cancel_bulk_job(job_id))

    # ------------------------------------------------------------ migrations

    def migrations(self, workflow: str) -> list[Migration]:
        return self.request(calls.migrations(workflow))

    def migration_dry_run(
        self,
        workflow: str,
        from_version: int,
        to_version: int,
        filters: MigrationFilters | None = None,
        *,
        force: bool = False,
    ) -> MigrationReport:
        return self.request(
            calls.migration_dry_run(workflow, from_version, to_version, filters, force=force)
        )

    def migrate(
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
        return self.request(
            calls.migrate(
                workflow,
                from_version,
                to_version,
                filters,
                force=force,
                idempotency_key=idempotency_key,
            )
        )

    def migration_job(self, job_id: str) -> MigrationJob:
        return self.request(calls.migration_job(job_id))

    def migration_items(
        self, job_id: str, *, status: ItemStatus | None = None, page_size: int = 100
    ) -> Iterator[JobItem]:
        return self._all(
            lambda c: calls.migration_items_page(job_id, status=status, cursor=c, limit=page_size)
        )

    def cancel_migration_job(self, job_id: str) -> MigrationJob:
        return self.request(calls.cancel_migration_job(job_id))


__all__ = ["Conveyor"]
