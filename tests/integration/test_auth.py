"""API keys: stored hashed, verified with scopes, enforced on every route but the public ones."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import KeyCache
from engine.auth import create_api_key, parse_scopes, revoke_api_key, verify_api_key
from engine.errors import InvalidRequest
from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import make_keys, process_env, serve_in_process

WaitFor = Callable[..., Awaitable[Any]]


async def test_a_key_is_stored_as_its_sha256_only(db: AsyncEngine) -> None:
    created = await create_api_key(db, "billing", "read,write")
    assert created.secret.startswith(f"cvk_{created.key.prefix}_")
    async with db.connect() as conn:
        row = (await conn.execute(text("select prefix, key_hash, scopes from api_keys"))).one()
    assert row.prefix == created.key.prefix
    assert bytes(row.key_hash) == hashlib.sha256(created.secret.encode()).digest()
    assert created.secret.split("_", 2)[2] not in str(row)
    assert list(row.scopes) == ["read", "write"]


async def test_verify_finds_live_keys_only(db: AsyncEngine) -> None:
    created = await create_api_key(db, "ops", ["admin"])
    key = await verify_api_key(db, created.secret)
    assert key is not None
    assert key.scopes == ("admin",)
    assert key.allows("read")
    assert key.allows("write")
    assert key.allows("admin")
    assert await verify_api_key(db, created.secret + "x") is None
    assert await verify_api_key(db, "not a key") is None
    assert await revoke_api_key(db, created.key.prefix)
    assert await verify_api_key(db, created.secret) is None
    assert not await revoke_api_key(db, created.key.prefix)


def test_scopes_nest_and_unknown_ones_are_refused() -> None:
    assert parse_scopes("read, write") == ("read", "write")
    with pytest.raises(InvalidRequest, match="unknown scope 'root'"):
        parse_scopes("read,root")
    with pytest.raises(InvalidRequest):
        parse_scopes("")


async def test_missing_or_bad_keys_are_401_problems(settings: Settings) -> None:
    async with serve_in_process(settings) as base, httpx.AsyncClient(base_url=base) as http:
        for headers in (
            {},
            {"Authorization": "Bearer cvk_00000000_" + "a" * 43},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"X-API-Key": "nonsense"},
        ):
            response = await http.get("/v1/workflows", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["title"] == "Unauthenticated"
        for public in ("/health", "/ready", "/docs", "/docs/openapi.json"):
            assert (await http.get(public)).status_code == 200, public
        assert (await http.get("/metrics")).status_code == 401


async def test_scopes_gate_reads_writes_and_operator_actions(settings: Settings) -> None:
    keys = await make_keys(settings)
    start = {
        "business_key": "o-auth",
        "data": {
            "order_id": "o-auth",
            "customer_id": "c",
            "currency": "EUR",
            "items": [{"sku": "a", "quantity": 1, "unit_price": "3"}],
            "total": "3",
        },
    }
    async with serve_in_process(settings) as base, httpx.AsyncClient(base_url=base) as http:

        def as_(key: str) -> dict[str, str]:
            return {"X-API-Key": key}

        read_start = await http.post(
            "/v1/workflows/order/instances", json=start, headers=as_(keys.read)
        )
        assert read_start.status_code == 403
        assert "lacks the 'write' scope" in read_start.json()["detail"]
        created = await http.post(
            "/v1/workflows/order/instances",
            json=start,
            headers={"Authorization": f"Bearer {keys.write}"},
        )
        assert created.status_code == 201
        url = created.headers["location"]
        for key in (keys.read, keys.write, keys.admin):
            assert (await http.get(url, headers=as_(key))).status_code == 200
            assert (await http.get("/metrics", headers=as_(key))).status_code == 200
        for action in ("cancel", "retry"):
            response = await http.post(f"{url}/{action}", headers=as_(keys.write))
            assert response.status_code == 403, action
        cancelled = await http.post(f"{url}/cancel", headers=as_(keys.admin))
        assert cancelled.status_code == 200


async def test_a_revoked_key_stops_working_within_the_cache_ttl(
    settings: Settings, db: AsyncEngine
) -> None:
    created = await create_api_key(db, "short-lived", "read")

    def short_cache(app: Any) -> None:
        app.ctx.key_cache = KeyCache(ttl=0.3)

    async with (
        serve_in_process(settings, configure=short_cache) as base,
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": created.secret}) as http,
    ):
        assert (await http.get("/v1/workflows")).status_code == 200
        await revoke_api_key(db, created.key.prefix)

        async def refused() -> bool:
            return (await http.get("/v1/workflows")).status_code == 401

        await wait_for(refused, timeout=5)


def test_cli_creates_a_key_and_prints_it_once(settings: Settings) -> None:
    env = process_env(settings, 0)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "apikey",
            "create",
            "--name",
            "ci",
            "--scopes",
            "read,write",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Only the key on stdout, so that KEY=$(conveyor apikey create ...) works.
    secret = result.stdout.strip()
    assert secret.startswith("cvk_")
    assert "\n" not in secret
    assert "scopes: read, write" in result.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "engine.cli", "apikey", "create", "--name", "x", "--scopes", "root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown scope" in bad.stderr


async def test_a_cli_key_authenticates_over_http(settings: Settings) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "apikey",
        "create",
        "--name",
        "cli",
        "--scopes",
        "read",
        env=process_env(settings, 0),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    secret = out.decode().strip().splitlines()[-1]
    async with serve_in_process(settings) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/v1/workflows", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200


def test_cli_lists_and_revokes_keys_without_showing_secrets(settings: Settings) -> None:
    env = process_env(settings, 0)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "apikey", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    secret = cli("create", "--name", "ops", "--scopes", "admin").stdout.strip()
    prefix = secret.split("_")[1]
    listed = cli("list")
    assert listed.returncode == 0
    assert prefix in listed.stdout
    assert "ops" in listed.stdout
    assert secret not in listed.stdout
    assert cli("revoke", prefix).returncode == 0
    assert cli("revoke", prefix).returncode == 1  # already revoked: nothing live to revoke
    row = next(line for line in cli("list").stdout.splitlines() if line.startswith(prefix))
    assert not row.rstrip().endswith("-")  # a revocation time is shown
