"""The console's static files and the ``/docs`` page over HTTP: only files under the static
directory, of the kinds served, with the right type and caching; no key needed."""

from __future__ import annotations

import gzip
from email.utils import formatdate

import httpx
import pytest

from api.console.assets import DOCS_CSP, IMMUTABLE, STATIC, asset_url, assets_version


async def test_a_vendored_file_with_the_current_version_is_cached_for_good(base: str) -> None:
    assert assets_version(), "the assets are installed by make install"
    url = asset_url("vendor/swagger-ui.css")
    assert url.endswith(f"?v={assets_version()}")
    async with httpx.AsyncClient(base_url=base) as http:
        versioned = await http.get(url, headers={"Accept-Encoding": "identity"})
        plain = await http.get("/ui/static/vendor/swagger-ui.css")
        stale = await http.get("/ui/static/vendor/swagger-ui.css?v=0ld")
    assert versioned.status_code == 200
    assert versioned.headers["content-type"] == "text/css; charset=utf-8"
    assert versioned.headers["cache-control"] == IMMUTABLE
    assert versioned.headers["x-content-type-options"] == "nosniff"
    assert versioned.content == (STATIC / "vendor" / "swagger-ui.css").read_bytes()
    assert plain.headers["cache-control"] == "no-cache"
    assert stale.headers["cache-control"] == "no-cache"


async def test_scripts_have_their_type_and_go_compressed_to_who_accepts_gzip(base: str) -> None:
    original = (STATIC / "vendor" / "mermaid.min.js").read_bytes()
    async with httpx.AsyncClient(base_url=base) as http:
        compressed = await http.get(
            "/ui/static/vendor/mermaid.min.js", headers={"Accept-Encoding": "gzip"}
        )
        identity = await http.get(
            "/ui/static/vendor/mermaid.min.js", headers={"Accept-Encoding": "identity"}
        )
        own = await http.get("/ui/static/docs.js")
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.headers["content-type"] == "text/javascript; charset=utf-8"
    assert compressed.headers["vary"] == "Accept-Encoding"
    assert int(compressed.headers["content-length"]) < len(original) / 2
    assert compressed.content == original  # httpx decoded it
    assert "content-encoding" not in identity.headers
    assert identity.content == original
    assert own.status_code == 200
    assert own.headers["content-type"] == "text/javascript; charset=utf-8"
    assert own.headers["cache-control"] == "no-cache"


async def test_an_unchanged_file_answers_304(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        first = await http.get("/ui/static/docs.js")
        again = await http.get(
            "/ui/static/docs.js", headers={"If-Modified-Since": first.headers["last-modified"]}
        )
        changed = await http.get(
            "/ui/static/docs.js", headers={"If-Modified-Since": formatdate(0, usegmt=True)}
        )
    assert again.status_code == 304
    assert again.content == b""
    assert changed.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "nothing.js",
        "vendor/nothing.css",
        "vendor/VERSION",  # not a kind served
        "vendor/mermaid.min.js.gz",  # not a kind served
        "%2e%2e/assets.py",
        "..%2fassets.py",
        "vendor/%2e%2e/%2e%2e/assets.py",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "vendor//swagger-ui.css",
        "vendor%5cswagger-ui.css",
        "docs.js%00.png",
        "vendor",
    ],
)
async def test_anything_but_a_served_file_is_a_404_problem(base: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.get(f"/ui/static/{path}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["status"] == 404


async def test_unknown_query_parameters_are_refused(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        static = await http.get("/ui/static/docs.js?v=1&debug=")
        docs = await http.get("/docs?url=https://elsewhere.example/openapi.json")
    assert static.status_code == 400
    assert "debug" in static.json()["detail"]
    assert docs.status_code == 400
    assert "url" in docs.json()["detail"]


async def test_docs_is_our_own_page_and_sanic_exts_pages_are_gone(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        docs = await http.get("/docs")
        gone = [
            (await http.get(path)).status_code
            for path in ("/docs/swagger", "/docs/redoc", "/docs/oauth2-redirect.html")
        ]
        spec = await http.get("/docs/openapi.json")
    assert docs.status_code == 200
    assert docs.headers["content-security-policy"] == DOCS_CSP
    assert "cdn" not in docs.text.lower()
    assert asset_url("vendor/swagger-ui-bundle.js") in docs.text
    assert gone == [404, 404, 404]
    assert spec.status_code == 200
    assert {"/docs", "/ui/static/{path}"} <= set(spec.json()["paths"])


def test_the_compressed_copies_match_the_files() -> None:
    for compressed in (STATIC / "vendor").glob("*.gz"):
        original = compressed.with_name(compressed.name.removesuffix(".gz"))
        assert gzip.decompress(compressed.read_bytes()) == original.read_bytes()
