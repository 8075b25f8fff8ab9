"""Idempotency-Key claims against the real PostgreSQL: one claimer per key and API key,
waiters get its response, a crashed claimer's lease runs out, a failure frees the key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api import idempotency
from api.idempotency import (
    Claim,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    KeyScope,
    StoredResponse,
)
from tests.conftest import wait_for

ONE = idempotency.request_hash("order", {"business_key": "one"})
OTHER = idempotency.request_hash("order", {"business_key": "other"})
ANSWER = StoredResponse(201, b'{"id": "i-1"}')


@pytest.fixture
def scope() -> KeyScope:
    return KeyScope(uuid.uuid4(), "key-1", "start:order")


async def test_the_first_request_claims_the_key_and_a_retry_gets_its_response(
    db: AsyncEngine, scope: KeyScope
) -> None:
    held = await idempotency.claim(db, scope, ONE)
    assert isinstance(held, Claim)
    assert await idempotency.complete(db, held, ANSWER) is ANSWER
    assert await idempotency.claim(db, scope, ONE) == ANSWER
    with pytest.raises(IdempotencyKeyReused):
        await idempotency.claim(db, scope, OTHER)


async def test_a_different_request_is_refused_while_the_claimer_runs(
    db: AsyncEngine, scope: KeyScope
) -> None:
    assert isinstance(await idempotency.claim(db, scope, ONE), Claim)
    with pytest.raises(IdempotencyKeyReused):
        await idempotency.claim(db, scope, OTHER)
    with pytest.raises(IdempotencyKeyInProgress):
        await idempotency.claim(db, scope, ONE, wait=0.1)


async def test_the_same_request_waits_for_the_claimers_response(
    db: AsyncEngine, scope: KeyScope
) -> None:
    held = await idempotency.claim(db, scope, ONE)
    assert isinstance(held, Claim)
    waiter = asyncio.create_task(idempotency.claim(db, scope, ONE, wait=10))
    done, _ = await asyncio.wait({waiter}, timeout=0.1)
    assert not done  # it found the claim pending, and polls
    await idempotency.complete(db, held, ANSWER)
    assert await asyncio.wait_for(waiter, 10) == ANSWER


async def test_concurrent_claims_have_exactly_one_winner(db: AsyncEngine, scope: KeyScope) -> None:
    digests = [idempotency.request_hash("order", {"n": i}) for i in range(20)]
    results = await asyncio.gather(
        *(idempotency.claim(db, scope, d, wait=0.5) for d in digests), return_exceptions=True
    )
    assert sum(isinstance(r, Claim) for r in results) == 1
    assert sum(isinstance(r, IdempotencyKeyReused) for r in results) == 19


async def test_a_crashed_claimers_lease_runs_out_and_the_same_request_takes_over(
    db: AsyncEngine, scope: KeyScope
) -> None:
    crashed = await idempotency.claim(db, scope, ONE, lease=timedelta(milliseconds=200))
    assert isinstance(crashed, Claim)
    # A waiter polls while the lease runs, then takes the claim over itself.
    taken = await idempotency.claim(db, scope, ONE, wait=10)
    assert isinstance(taken, Claim)
    assert taken.lease_end != crashed.lease_end
    # The key still belongs to the first request's body.
    with pytest.raises(IdempotencyKeyReused):
        await idempotency.claim(db, scope, OTHER)
    # The old claimer, back after all, cannot overwrite: the new claimer's answer is stored.
    assert await idempotency.complete(db, taken, ANSWER) is ANSWER
    late = StoredResponse(201, b'{"id": "late"}')
    assert await idempotency.complete(db, crashed, late) == ANSWER
    assert await idempotency.claim(db, scope, ONE) == ANSWER


async def test_a_released_claim_frees_the_key(db: AsyncEngine, scope: KeyScope) -> None:
    held = await idempotency.claim(db, scope, ONE)
    assert isinstance(held, Claim)
    await idempotency.release(db, held)
    assert isinstance(await idempotency.claim(db, scope, OTHER), Claim)


async def test_keys_are_scoped_by_api_key_and_endpoint(db: AsyncEngine, scope: KeyScope) -> None:
    held = await idempotency.claim(db, scope, ONE)
    assert isinstance(held, Claim)
    await idempotency.complete(db, held, ANSWER)
    for other in (
        KeyScope(uuid.uuid4(), scope.key, scope.endpoint),
        KeyScope(scope.api_key_id, scope.key, "start:other"),
    ):
        assert isinstance(await idempotency.claim(db, other, OTHER), Claim)


async def test_a_waiter_answers_409_in_progress_with_retry_after(
    db: AsyncEngine, scope: KeyScope
) -> None:
    assert isinstance(await idempotency.claim(db, scope, ONE), Claim)
    attempt = asyncio.create_task(idempotency.claim(db, scope, ONE, wait=0.3))
    error = await wait_for(lambda: _exception_of(attempt), timeout=5)
    assert isinstance(error, IdempotencyKeyInProgress)
    assert error.status_code == 409
    assert error.headers["Retry-After"] == "1"


async def _exception_of(task: asyncio.Task[object]) -> BaseException | None:
    return task.exception() if task.done() else None
