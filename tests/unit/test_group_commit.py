"""Group commit: concurrent submissions share batches; a bad item fails only its caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from engine.group_commit import GroupCommit


async def test_concurrent_submissions_share_batches_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def apply(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0)  # a transaction's round trip: others queue meanwhile
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(apply, max_batch=50, concurrency=2)
    results = await asyncio.gather(*(group.submit(i) for i in range(100)))
    assert results == [i * 10 for i in range(100)]
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    assert len(batches) < 100 / 4
    assert max(len(b) for b in batches) <= 50


async def test_a_lone_submission_is_applied_alone() -> None:
    seen: list[list[str]] = []

    async def apply(items: Sequence[str]) -> list[str]:
        seen.append(list(items))
        return [s.upper() for s in items]

    group: GroupCommit[str, str] = GroupCommit(apply)
    assert await group.submit("a") == "A"
    assert seen == [["a"]]


async def test_a_failing_batch_is_retried_item_by_item_so_only_the_bad_caller_fails() -> None:
    async def apply(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(apply, concurrency=1)
    results = await asyncio.gather(
        *(group.submit(i) for i in range(10, 16)), return_exceptions=True
    )
    assert results[:3] == [10, 11, 12]
    assert isinstance(results[3], ValueError)
    assert results[4:] == [14, 15]


async def test_the_number_of_batches_in_flight_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def apply(items: Sequence[int]) -> list[int]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(apply, max_batch=3, concurrency=2)
    await asyncio.gather(*(group.submit(i) for i in range(60)))
    assert peak == 2


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_nothing_is_left_pending(concurrency: int) -> None:
    async def apply(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0)
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(apply, max_batch=7, concurrency=concurrency)
    for _ in range(3):
        assert await asyncio.gather(*(group.submit(i) for i in range(30))) == list(range(30))
