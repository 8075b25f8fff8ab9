"""Group commit: concurrent single sends share transactions.

Many callers each sending one event (HTTP requests, say) would each pay a transaction of
four round trips. The batcher queues them and lets up to ``concurrency`` transactions run
at once, each taking whatever has queued up meanwhile (at most ``max_batch``): under load
a transaction carries many events, and a lone caller still waits for just its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs ``apply(batch)`` for queued items; each caller gets its own item's result."""

    def __init__(
        self,
        apply: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 200,
        concurrency: int = 4,
    ) -> None:
        self._apply = apply
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._running) < self.concurrency:
            task = asyncio.create_task(self._drain())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = [
                self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))
            ]
            try:
                results = await self._apply([item for item, _ in batch])
            except BaseException as exc:
                # The whole transaction failed (after its own retries): try each item on its
                # own, so that one bad item fails only its caller.
                if len(batch) == 1 or not isinstance(exc, Exception):
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for item, future in batch:
                    try:
                        (result,) = await self._apply([item])
                    except Exception as single:
                        if not future.done():
                            future.set_exception(single)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
