"""Hostile HTTP input over real HTTP against the real PostgreSQL: every answer is a clear
4xx problem+json naming what is wrong, never a 500 or a stack trace."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson
import pytest

from tests.e2e.http_support import Keys, order_data

PROBLEM = "application/problem+json"
ORDERS = "/v1/workflows/order/instances"


@pytest.fixture
async def client(base: str, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an admin key."""
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {keys.admin}"}, timeout=10
    ) as http:
        yield http


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """A problem+json answer with ``status`` whose text names each of ``fragments``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in response.text, (fragment, body)
    return body


def error_paths(body: dict[str, Any]) -> set[str]:
    return {error["path"] for error in body.get("errors") or []}


async def start_order(
    http: httpx.AsyncClient, key: str | None = None, data: dict[str, Any] | None = None
) -> httpx.Response:
    business_key = key or f"o-{uuid.uuid4().hex[:8]}"
    return await http.post(
        ORDERS, json={"business_key": business_key, "data": data or order_data("o-1")}
    )


async def started(http: httpx.AsyncClient, key: str | None = None) -> dict[str, Any]:
    response = await start_order(http, key)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def cursor_of(value: Any) -> str:
    """A list cursor as the API makes them: unpadded base64url of JSON."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


# ---------------------------------------------------------------- 1. API key headers


NOT_ASCII_KEYS = [
    (b"Authorization", b"Bearer \xff\xfe"),
    (b"Authorization", b"Bearer cvk_0123abcd_\xc3\x28" + b"a" * 30),
    (b"X-API-Key", b"\xff"),
    (b"X-API-Key", b"cvk_0123abcd_" + b"\x80" * 30),
    (b"Authorization", "Bearer zürich".encode()),  # UTF-8, but no key is not ASCII
]


async def test_api_key_that_is_not_ascii_is_401(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for header, value in NOT_ASCII_KEYS:
            for method, url in (("GET", "/v1/instances"), ("POST", ORDERS)):
                response = await http.request(method, url, headers={header: value})
                assert_problem(response, 401, "API key")
                assert response.headers["www-authenticate"].startswith("Bearer")


async def test_idempotency_key_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        ORDERS,
        json={"business_key": "idem-bytes", "data": order_data("idem-bytes")},
        headers={b"Idempotency-Key": b"k-\xff\xfe"},
    )
    assert_problem(response, 400, "Idempotency-Key")
    instance = await started(client)
    response = await client.post(
        f"/v1/instances/{instance['id']}/events",
        json={"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}},
        headers={b"Idempotency-Key": b"e-\xff"},
    )
    assert_problem(response, 400, "Idempotency-Key")


async def test_path_that_is_not_utf8_is_a_4xx(base: str, keys: Keys) -> None:
    """Raw bytes that are not UTF-8 in the request target (no HTTP client sends them)."""
    parts = urlsplit(base)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            b"GET /v1/workflows/order/instances/k-\xff\xfe HTTP/1.1\r\n"
            b"Host: test\r\nConnection: close\r\n"
            b"Authorization: Bearer " + keys.admin.encode() + b"\r\n\r\n"
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, raw
    assert b"Traceback" not in body


# ---------------------------------------------------------------- 2. list cursors

UUID = "0b8f3c3e-7d7a-4c8e-9a55-2f1b8a0b6c11"


CRAFTED_CURSORS = [
    cursor_of(["2026-12-03T00:00:00+00:00", 123]),
    cursor_of([123, UUID]),
    cursor_of(["2026-12-03T00:00:00+00:00"]),
    cursor_of(["2026-12-03T00:00:00+00:00", UUID, 3]),
    cursor_of([]),
    cursor_of({"created_at": "2026-12-03T00:00:00+00:00", "id": UUID}),
    cursor_of("2026-12-03T00:00:00+00:00"),
    cursor_of(None),
    cursor_of(1.5),
    cursor_of([None, None]),
    cursor_of([["2026-12-03T00:00:00+00:00"], UUID]),
    cursor_of(["2026-12-03T00:00:00", UUID]),  # naive
    cursor_of(["yesterday", UUID]),
    cursor_of(["2026-12-03T00:00:00+00:00", "not-a-uuid"]),
    cursor_of(["0001-01-01T00:00:00+14:00", UUID]),  # before year 1 in UTC
    cursor_of(["9999-12-31T23:59:59-14:00", UUID]),  # after year 9999 in UTC
    base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
    base64.urlsafe_b64encode(b"[1e400, 1]").decode(),
    "garbage!",
    "a",
    "%%%",
]


async def test_crafted_list_cursor_is_400_naming_the_cursor(client: httpx.AsyncClient) -> None:
    for cursor in CRAFTED_CURSORS:
        response = await client.get("/v1/instances", params={"cursor": cursor})
        assert_problem(response, 400, "cursor", "next_cursor")


async def test_list_cursor_round_trips(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await started(client)
    first = (await client.get("/v1/instances", params={"limit": 2})).json()
    assert len(first["items"]) == 2
    rest = await client.get("/v1/instances", params={"limit": 2, "cursor": first["next_cursor"]})
    assert rest.status_code == 200, rest.text
    assert len(rest.json()["items"]) == 1


# ---------------------------------------------------------------- 3. date-time filters


BAD_DATE_TIMES = [
    ("created_after", "0001-01-01T00:00:00+14:00"),  # before year 1 once in UTC
    ("updated_before", "9999-12-31T23:59:59-14:00"),  # after year 9999 once in UTC
    ("updated_before", "0.5"),  # a Unix time: not a date-time
    ("created_after", "1700000000"),
    ("created_before", "-1"),
    ("updated_after", "2026-01-31"),  # a date without a time
    ("created_after", "2026-13-01T00:00:00Z"),
    ("created_after", "2024-01-01T12:99:00Z"),
    ("updated_after", "tomorrow"),
    ("created_before", ""),
]


async def test_bad_date_time_filter_is_400_naming_it(client: httpx.AsyncClient) -> None:
    for name, value in BAD_DATE_TIMES:
        response = await client.get("/v1/instances", params={name: value})
        body = assert_problem(response, 400, name)
        assert error_paths(body) == {name}, (value, body)


async def test_date_time_filters_take_iso_8601_with_or_without_offset(
    client: httpx.AsyncClient,
) -> None:
    instance = await started(client)
    for after in ("2000-01-01T00:00:00Z", "2000-01-01t00:00:00z", "2000-01-01T02:00:00+02:00"):
        found = await client.get("/v1/instances", params={"created_after": after})
        assert found.status_code == 200, found.text
        assert instance["id"] in {i["id"] for i in found.json()["items"]}
    # Without an offset a time is UTC; the far past excludes everything.
    none = await client.get("/v1/instances", params={"created_before": "2000-01-01T00:00:00"})
    assert none.status_code == 200, none.text
    assert none.json()["items"] == []


# ---------------------------------------------------------------- 4. decimals


def order_with_line(unit_price: Any, quantity: Any = 10, total: Any = "1") -> dict[str, Any]:
    data = order_data("o-dec")
    data["items"] = [{"sku": "sku-1", "quantity": quantity, "unit_price": unit_price}]
    data["total"] = total
    return data


OUT_OF_RANGE_DATA = [
    (order_with_line("9e999999"), "data.items.0.unit_price"),  # overflows when multiplied
    (order_with_line("-9e999999"), "data.items.0.unit_price"),
    (order_with_line("1e1001", 1, "1e1001"), "data.items.0.unit_price"),
    (order_with_line("1e-1001", 1, "1e-1001"), "data.items.0.unit_price"),
    (order_with_line("1e999999999999999999"), "data.items.0.unit_price"),
    # 1001 digits (equal in value to the total: the line sum rounds to 28 digits)
    (order_with_line("1" + "0" * 1000, 1, "1e1000"), "data.items.0.unit_price"),
    (order_with_line("NaN"), "data.items.0.unit_price"),
    (order_with_line("Infinity"), "data.items.0.unit_price"),
    (order_with_line("1", "1" + "0" * 30, "1" + "0" * 30), "data.items.0.quantity"),
    (order_with_line("1e1000", 10, "1e1001"), "data.total"),
]


async def test_start_data_with_out_of_range_decimals_is_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    for data, path in OUT_OF_RANGE_DATA:
        body = assert_problem(await start_order(client, data=data), 422, path)
        assert path in error_paths(body), (data["items"], body)
    listed = (await client.get("/v1/instances")).json()
    assert listed["items"] == []  # nothing was started


async def test_event_payload_with_out_of_range_decimal_is_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    instance = await started(client)
    url = f"/v1/instances/{instance['id']}/events"
    for amount in ("9e999999", "1e-5000", "NaN"):
        response = await client.post(
            url,
            json={
                "type": "payment.captured",
                "payload": {"payment_id": "p-1", "amount": amount, "currency": "EUR"},
            },
        )
        body = assert_problem(response, 422, "payload.amount")
        assert "payload.amount" in error_paths(body)
    after = (await client.get(f"/v1/instances/{instance['id']}")).json()
    assert after["state"] == instance["state"]
    assert after["revision"] == instance["revision"]


async def test_decimals_in_range_still_start(client: httpx.AsyncClient) -> None:
    data = order_with_line("1e999", 2, "2e999")
    response = await start_order(client, data=data)
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- 5. business keys in paths


AWKWARD_KEYS = [
    "a b",
    "zürich",
    "a/b",
    "/leading",
    "what?",
    "x#y",
    "100%",
    "%41",
    "a+b",
    "semi;colon",
    "..",
    "東京",
]


async def test_business_key_round_trips_percent_encoded(client: httpx.AsyncClient) -> None:
    for business_key in AWKWARD_KEYS:
        instance = await started(client, business_key)
        segment = quote(business_key, safe="")
        if business_key in (".", ".."):  # else clients resolve them as dot-segments
            segment = segment.replace(".", "%2E")
        response = await client.get(f"{ORDERS}/{segment}")
        assert response.status_code == 200, (business_key, response.text)
        assert response.json()["id"] == instance["id"]
        assert response.json()["business_key"] == business_key


async def test_business_key_paths_that_decode_to_nothing_stored(
    client: httpx.AsyncClient,
) -> None:
    await started(client, "A")
    assert_problem(await client.get(f"{ORDERS}/%FF%FE"), 400, "UTF-8")
    assert_problem(await client.get(f"{ORDERS}/%2541"), 404)  # the key "%41", not "A"
    assert_problem(await client.get(f"{ORDERS}/a%00b"), 404)


# ---------------------------------------------------------------- 6. Content-Type

NOT_JSON = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "application/jsonp",
    "application/json; charset=latin-1",
    "json",
    "",
]


async def body_endpoints(client: httpx.AsyncClient) -> list[tuple[str, dict[str, Any]]]:
    """Every endpoint that takes a JSON body, each with a body it would accept."""
    instance = await started(client)
    events = f"/v1/instances/{instance['id']}/events"
    return [
        (ORDERS, {"business_key": f"ct-{uuid.uuid4().hex[:8]}", "data": order_data("ct")}),
        (events, {"type": "payment.initiated", "payload": {"payment_id": "p", "provider": "x"}}),
        (f"/v1/instances/{instance['id']}/cancel", {"reason": "test"}),
    ]


JSON_TYPES: list[str | None] = [
    "application/json",
    "application/json; charset=utf-8",
    'Application/JSON;charset="UTF-8"',
    "application/vnd.conveyor+json",
    "application/problem+json",
    None,  # no Content-Type: taken as JSON (HTTP libraries given raw bytes send none)
]


async def test_body_that_is_not_json_by_content_type_is_415(client: httpx.AsyncClient) -> None:
    endpoints = await body_endpoints(client)
    for content_type in NOT_JSON:
        for url, body in endpoints:
            response = await client.post(
                url, content=orjson.dumps(body), headers={"Content-Type": content_type}
            )
            assert_problem(response, 415, "Content-Type")
            assert response.headers["accept-post"] == "application/json"
    listed = (await client.get("/v1/instances")).json()["items"]
    assert [(i["state"], i["status"], i["revision"]) for i in listed] == [("placed", "active", 1)]


async def test_json_bodies_are_accepted_by_content_type(client: httpx.AsyncClient) -> None:
    for content_type in JSON_TYPES:
        for url, body in await body_endpoints(client):
            headers = {} if content_type is None else {"Content-Type": content_type}
            response = await client.post(url, content=orjson.dumps(body), headers=headers)
            assert response.status_code in (200, 201), (content_type, url, response.text)


async def test_empty_optional_body_needs_no_content_type(client: httpx.AsyncClient) -> None:
    instance = await started(client)
    response = await client.post(
        f"/v1/instances/{instance['id']}/cancel", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["instance"]["status"] == "cancelled"


# ---------------------------------------------------------------- 7. numbers JSON cannot hold


async def test_non_finite_numbers_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    instance = await started(client)
    events = f"/v1/instances/{instance['id']}/events"
    json_type = {"Content-Type": "application/json"}
    for number in (b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity"):
        start = b'{"business_key": "nf", "data": {"order_id": "o", "extra": {"x": %s}}}' % number
        response = await client.post(ORDERS, content=start, headers=json_type)
        body = assert_problem(response, 422, "data.extra.x", "finite")
        assert error_paths(body) == {"data.extra.x"}
        event = b'{"type": "payment.failed", "payload": {"reason": "r", "n": [%s]}}' % number
        response = await client.post(events, content=event, headers=json_type)
        body = assert_problem(response, 422, "payload.n.0", "finite")
        assert error_paths(body) == {"payload.n.0"}
    history = (await client.get(f"{events[: -len('/events')]}/history")).json()["items"]
    assert len(history) == 1  # only the start: nothing was stored


# ---------------------------------------------------------------- 8. nesting


async def test_nesting_beyond_the_limit_is_400_saying_so(client: httpx.AsyncClient) -> None:
    deep = b'{"business_key": "deep", "data": ' + b"[" * 250 + b"]" * 250 + b"}"
    response = await client.post(ORDERS, content=deep, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "nested deeper than 200 levels")


async def test_nesting_within_the_limit_is_parsed(client: httpx.AsyncClient) -> None:
    data = order_data("shallow")
    nested: Any = []
    for _ in range(190):
        nested = [nested]
    data["deep"] = nested
    response = await client.post(ORDERS, json={"business_key": "shallow", "data": data})
    assert response.status_code == 201, response.text


async def test_broken_json_says_where(client: httpx.AsyncClient) -> None:
    response = await client.post(
        ORDERS, content=b'{"business_key": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "not valid JSON", "line 1")


# ---------------------------------------------------------------- 9. history cursor


async def test_history_cursor_is_a_string_of_digits_everywhere(
    client: httpx.AsyncClient,
) -> None:
    instance = await started(client)
    url = f"/v1/instances/{instance['id']}"
    payload = {"payment_id": "p", "provider": "x"}
    await client.post(f"{url}/events", json={"type": "payment.initiated", "payload": payload})
    first = (await client.get(f"{url}/history", params={"limit": 1})).json()
    assert isinstance(first["next_cursor"], str)
    assert first["next_cursor"].isdigit()
    rest = await client.get(f"{url}/history", params={"cursor": first["next_cursor"]})
    assert rest.status_code == 200, rest.text
    assert [i["id"] for i in rest.json()["items"]] == [first["items"][0]["id"] + 1]
    for bad in ("x", "-1", "1.0", "+1", " 1", "1_0", "99999999999999999999", "9223372036854775808"):
        assert_problem(await client.get(f"{url}/history", params={"cursor": bad}), 400, "cursor")
    document = (await client.get("/docs/openapi.json")).json()
    parameters = document["paths"]["/v1/instances/{instance_id}/history"]["get"]["parameters"]
    cursor = next(p for p in parameters if p["name"] == "cursor")
    assert cursor["schema"]["type"] == "string"
    page = document["components"]["schemas"]["HistoryPage"]["properties"]["next_cursor"]
    assert page["type"] == "string"
