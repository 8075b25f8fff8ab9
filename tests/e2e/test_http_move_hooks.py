"""``POST /v1/instances/{id}/move`` with ``run_hooks`` over HTTP: the hooks' data is
stored; a hook that raises answers a 409 problem naming its error, and nothing moved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from tests.e2e.http_support import make_keys, serve_in_process


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    keys = await make_keys(settings)
    with_ledgers = settings.model_copy(
        update={"workflow_modules": ["workflows", "tests.move_flows"]}
    )
    async with (
        serve_in_process(with_ledgers) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def start(client: httpx.AsyncClient, key: str, **data: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/workflows/test.move_hooks/instances",
        json={"business_key": key, "data": {"key": key, **data}},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_move_with_run_hooks_keeps_their_data(client: httpx.AsyncClient) -> None:
    ledger = await start(client, "H-1")
    moved = await client.post(
        f"/v1/instances/{ledger['id']}/move", json={"state": "review", "run_hooks": True}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["visits"] == [
        "exit open to review",
        "enter review on conveyor.move",
    ]


async def test_a_hook_that_raises_answers_409_and_moves_nothing(
    client: httpx.AsyncClient,
) -> None:
    ledger = await start(client, "H-2", broken=True)
    url = f"/v1/instances/{ledger['id']}"
    refused = await client.post(f"{url}/move", json={"state": "review", "run_hooks": True})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["title"] == "Move hook failed"
    assert "RuntimeError: ledger service unreachable" in problem["detail"]
    after = (await client.get(url)).json()
    assert (after["state"], after["revision"], after["data"]) == (
        "open",
        ledger["revision"],
        ledger["data"],
    )
