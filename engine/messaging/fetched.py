"""The worker's read-ahead buffer: records fetched while the batch before them is applied.

The consumer's fetch loop adds what ``getmany`` returns, and the batch loop takes all of
it at once as the next batch; together at most ``limit`` records are fetched but not
applied (the bound on work in flight). A rebalance drops the revoked partitions' records:
their new owner reads them again from the committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

Record = Any  # aiokafka.structs.ConsumerRecord (untyped library)


class Fetched:
    """Records fetched ahead of the batch being applied: in order per partition, at most
    ``limit`` of them (the bound on work in flight)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._by_partition: dict[TopicPartition, list[Record]] = {}
        self.ready = asyncio.Event()  # something to take
        self.room = asyncio.Event()  # below the limit
        self.room.set()

    def add(self, batches: Mapping[TopicPartition, Sequence[Record]]) -> None:
        for tp, records in batches.items():
            if records:
                self._by_partition.setdefault(tp, []).extend(records)
                self.count += len(records)
        if self.count:
            self.ready.set()
        if self.count >= self.limit:
            self.room.clear()

    def take(self) -> dict[TopicPartition, list[Record]]:
        """Everything fetched so far, as one batch."""
        taken, self._by_partition, self.count = self._by_partition, {}, 0
        self.ready.clear()
        self.room.set()
        return taken

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.count -= len(self._by_partition.pop(tp, ()))
        if not self.count:
            self.ready.clear()
        if self.count < self.limit:
            self.room.set()


__all__ = ["Fetched", "Record"]
