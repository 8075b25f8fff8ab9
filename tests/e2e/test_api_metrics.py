"""The API's /metrics: instances past their state's SLA, counted from the database when
scraped, by workflow and state (what the stuck-instances alert watches)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.e2e.http_support import Keys, serve_in_process
from tests.metrics_support import one, samples


@pytest.fixture
async def client(settings: Settings, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of an app that also knows the test ticket workflow (with an SLA)."""
    with_tickets = settings.model_copy(
        update={"workflow_modules": [*settings.workflow_modules, "tests.sla_flows"]}
    )
    async with (
        serve_in_process(with_tickets) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
        ) as http,
    ):
        yield http


async def test_metrics_count_instances_past_their_sla_by_workflow_and_state(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    for key in ("t-1", "t-2", "t-3"):
        response = await client.post(
            "/v1/workflows/test.ticket/instances",
            json={"business_key": key, "data": {"subject": key}},
        )
        assert response.status_code == 201, response.text
    # Two tickets have been waiting for ten minutes (their SLA is five).
    async with db.begin() as conn:
        await conn.execute(
            text(
                "update instances set state_entered_at = now() - interval '10 minutes' "
                "where business_key in ('t-1', 't-2')"
            )
        )

    response = await client.get("/metrics")
    assert response.status_code == 200
    page = samples(response.text)
    breached = "conveyor_instances_sla_breached"
    assert one(page, breached, workflow="test.ticket", state="waiting") == 2
    started = {"workflow": "test.ticket", "outcome": "started", "source": "http"}
    assert one(page, "conveyor_transitions_total", **started) == 3
    assert "# HELP conveyor_instances_sla_breached " in response.text
