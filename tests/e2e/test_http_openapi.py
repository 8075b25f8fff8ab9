"""The OpenAPI document against the live API: schemathesis generates valid and invalid
requests for every operation and checks each answer (no 5xx, documented status, content
type, headers and body schema). Bounded: few examples per operation and a time limit."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.settings import Settings
from tests.e2e.http_support import Keys, order_data, serve_process

EXAMPLES_PER_OPERATION = 25
TIME_LIMIT_SECONDS = 120.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _run(
    operation: Any,
    mode: schemathesis.GenerationMode,
    base: str,
    headers: dict[str, str],
    path_parameters: dict[str, Any] | None,
) -> int:
    calls = 0
    checks = (
        [*CHECKS, negative_data_rejection]
        if mode is schemathesis.GenerationMode.NEGATIVE
        else CHECKS
    )

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=base, headers=headers, timeout=10)
        case.validate_response(response, checks=checks, headers=headers)

    try:
        check()
    except Unsatisfiable:  # nothing to negate (an operation without parameters or body)
        assert mode is schemathesis.GenerationMode.NEGATIVE
    return calls


def test_every_answer_matches_the_openapi_document(settings: Settings, keys: Keys) -> None:
    headers = {"Authorization": f"Bearer {keys.admin}"}
    with serve_process(settings) as (base, _):
        # Some real instances, so that generated requests also reach existing ones.
        instance_ids = []
        for n in range(3):
            response = httpx.post(
                f"{base}/v1/workflows/order/instances",
                json={"business_key": f"st-{n}", "data": order_data(f"st-{n}")},
                headers=headers,
                timeout=10,
            )
            assert response.status_code == 201
            instance_ids.append(response.json()["id"])
        schema = schemathesis.openapi.from_url(f"{base}/docs/openapi.json")
        deadline = time.monotonic() + TIME_LIMIT_SECONDS
        calls = 0
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 14
        for operation in operations:
            names = {p.name for p in operation.path_parameters}
            known: dict[str, Any] = {}
            if "instance_id" in names:
                known["instance_id"] = instance_ids[0]
            if "name" in names:
                known["name"] = "order"
            if "business_key" in names:
                known["business_key"] = "st-1"
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):
                for path_parameters in ({}, known) if known else ({},):
                    if time.monotonic() > deadline:
                        pytest.fail(f"time limit reached after {calls} requests")
                    calls += _run(operation, mode, base, headers, path_parameters or None)
        assert calls > 200
