"""The relay places keys where aiokafka's default partitioner (and Java clients) would."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from engine.messaging.batches import KeyPartitioner, murmur2


@given(st.binary(max_size=80))
def test_murmur2_equals_the_java_clients_hash(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data) & 0xFFFFFFFF


def test_murmur2_known_values() -> None:
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2),
    # as unsigned 32-bit integers.
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for data, signed in cases.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=50), st.integers(1, 64))
def test_key_partitioner_matches_the_default_partitioner(keys: list[bytes], count: int) -> None:
    partitions = list(range(count))
    ours = KeyPartitioner(cache_size=8)  # small: eviction runs often
    default = DefaultPartitioner()
    for key in keys + keys:
        assert ours(key, partitions) == default(key, partitions, partitions)


def test_cache_stays_bounded_and_keeps_recent_keys() -> None:
    partitioner = KeyPartitioner(cache_size=100)
    partitions = list(range(12))
    for i in range(1000):
        partitioner(f"order-{i}".encode(), partitions)
    cache = partitioner._partition_of
    assert len(cache) <= 100
    assert (b"order-999", 12) in cache  # the newest survive an eviction


def test_no_key_picks_some_partition() -> None:
    random.seed(3)
    picks = {KeyPartitioner()(None, [0, 1, 2]) for _ in range(200)}
    assert picks == {0, 1, 2}
