"""The worker's read-ahead buffer: order per partition, a bound, and dropping on revoke."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from engine.messaging.fetched import Fetched

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def test_records_are_taken_in_order_per_partition_and_the_bound_holds() -> None:
    fetched = Fetched(limit=4)
    assert not fetched.ready.is_set()
    assert fetched.room.is_set()
    fetched.add({A: [1, 2], B: [10]})
    fetched.add({A: [3], B: []})
    assert fetched.count == 4
    assert fetched.ready.is_set()
    assert not fetched.room.is_set()  # at the limit: the fetch loop waits
    taken: dict[Any, list[Any]] = fetched.take()
    assert taken == {A: [1, 2, 3], B: [10]}
    assert fetched.count == 0
    assert not fetched.ready.is_set()
    assert fetched.room.is_set()


def test_revoked_partitions_are_dropped() -> None:
    fetched = Fetched(limit=3)
    fetched.add({A: [1, 2], B: [10]})
    fetched.drop([A, TopicPartition("t", 9)])
    assert fetched.count == 1
    assert fetched.room.is_set()
    assert fetched.take() == {B: [10]}
    fetched.add({A: [4]})
    fetched.drop([A])
    assert not fetched.ready.is_set()
