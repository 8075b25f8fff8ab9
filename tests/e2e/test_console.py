"""The console's sign-in, session, overview and instance list, over real HTTP against the
test's schema: cookies, CSRF, security headers, filters and search."""

from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.auth import revoke_api_key
from tests.e2e.console_support import csrf_of, sign_in
from tests.e2e.http_support import Keys, order_data


async def start_orders(base: str, key: str, *business_keys: str) -> None:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        for business_key in business_keys:
            response = await api.post(
                "/v1/workflows/order/instances",
                json={"business_key": business_key, "data": order_data(business_key)},
            )
            assert response.status_code == 201, response.text


async def test_pages_need_a_session_and_sign_in_opens_one_with_safe_cookie_flags(
    base: str, keys: Keys
) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as anonymous:
        response = await anonymous.get("/ui/overview")
        assert response.status_code == 302
        assert response.headers["location"] == "/ui/login?next=/ui/overview"
        login = await anonymous.get("/ui/login")
        assert login.status_code == 200
        assert 'name="api_key" type="password"' in login.text
        assert "script-src 'self'" in login.headers["content-security-policy"]
        assert login.headers["x-frame-options"] == "DENY"
        # A wrong key: 401, no cookie.
        wrong = await anonymous.post(
            "/ui/login", data={"api_key": "cvk_nope"}, headers={"Origin": base}
        )
        assert wrong.status_code == 401
        assert "not valid" in wrong.text
        assert "set-cookie" not in wrong.headers
        # From another origin: refused.
        forged = await anonymous.post(
            "/ui/login", data={"api_key": keys.read}, headers={"Origin": "http://evil.test"}
        )
        assert forged.status_code == 403

        response = await anonymous.post(
            "/ui/login",
            data={"api_key": keys.read, "next": "//evil.test/"},
            headers={"Origin": base},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/"  # no open redirect
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("conveyor_console=")
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/ui", "expires="):
            assert flag.lower() in cookie.lower(), cookie
        assert keys.read not in cookie


async def test_overview_and_instance_list_with_filters_and_search(base: str, keys: Keys) -> None:
    await start_orders(base, keys.write, "A-1001", "A-1002", "B-2001")
    async with sign_in(base, keys.read) as console:
        overview = await console.get("/ui/overview")
        assert overview.status_code == 200
        assert "order v1" in overview.text
        assert "/ui/instances?workflow=order&amp;version=1&amp;state=placed" in overview.text
        assert "test-read" in overview.text  # who is signed in
        assert overview.headers["cache-control"] == "no-store"
        assert 'id="lag"' in overview.text
        assert "Kafka did not answer" not in overview.text
        assert "events behind" in overview.text

        listed = await console.get("/ui/instances", params={"workflow": "order"})
        assert listed.status_code == 200
        for key in ("A-1001", "A-1002", "B-2001"):
            assert key in listed.text
        found = await console.get("/ui/instances", params={"business_key_prefix": "A-"})
        assert "A-1001" in found.text
        assert "B-2001" not in found.text
        # The filter form's empty fields and data box are tidied into a clean URL.
        tidy = await console.get(
            "/ui/instances",
            params={"workflow": "order", "state": "", "data": "customer_id=c-1"},
        )
        assert tidy.status_code == 302
        assert tidy.headers["location"] == ("/ui/instances?workflow=order&data.customer_id=c-1")
        paged = await console.get("/ui/instances", params={"workflow": "order", "limit": 2})
        assert 'rel="next"' in paged.text
        # A bad filter is a clear error page, never a 500.
        bad = await console.get("/ui/instances", params={"version": "x"})
        assert bad.status_code == 400
        assert "version" in bad.text
        # A read-only key is offered no bulk action.
        assert "Cancel or retry all matches" not in listed.text


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(base: str, keys: Keys) -> None:
    async with sign_in(base, keys.admin) as console:
        page = await console.get("/ui/overview")
        token = csrf_of(page.text)
        refused = await console.post("/ui/logout", data={"csrf": "forged"})
        assert refused.status_code == 403
        assert (await console.get("/ui/overview")).status_code == 200
        out = await console.post("/ui/logout", data={"csrf": token})
        assert out.status_code == 303
        console.cookies.clear()
        assert (await console.get("/ui/overview")).status_code == 302


async def test_a_revoked_key_ends_its_sessions_at_once(
    base: str, keys: Keys, db: AsyncEngine
) -> None:
    async with sign_in(base, keys.read) as console:
        assert (await console.get("/ui/overview")).status_code == 200
        prefix = keys.read.split("_")[1]
        assert await revoke_api_key(db, prefix)
        assert (await console.get("/ui/overview")).status_code == 302
    async with db.connect() as conn:
        stored = (await conn.execute(text("select token_hash from console_sessions"))).all()
    assert stored, "sessions are stored by the hash of their token"
