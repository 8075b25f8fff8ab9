"""The console's static files (``/ui/static/...``) and the API docs page (``/docs``).

Everything a browser loads comes from this process: the project's own scripts and styles
(``static/``) and the front-end packages that ``make install`` copies from the npm
registry into ``static/vendor/`` (``ui/install-assets.sh``, pinned by
``ui/package-lock.json``). No page refers to another origin, so the console and the docs
work without internet access.

A vendored file asked for with the current assets version (``?v=...``, see
:func:`asset_url`) may be cached for a year: a new version has a new URL. Anything else
is revalidated (``Last-Modified``). A pre-compressed ``.gz`` sibling, which the install
script writes for the large bundles, is sent to a client that accepts gzip.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sanic import Blueprint, HTTPResponse, Request, html
from sanic.response import file

from api.console.render import environment
from api.problems import problem

assets_bp = Blueprint("console_assets")

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = "vendor/"
VERSION_STAMP = STATIC / "vendor" / "VERSION"

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
"""The only kinds of file served; anything else under ``static/`` answers 404."""

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}

DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The ``/docs`` page runs only this origin's scripts; Swagger UI sets inline styles."""

DOCS_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@cache
def assets_version() -> str:
    """The installed assets' version: the start of the lock file's hash that
    ``ui/install-assets.sh`` records ("" when the assets are not installed)."""
    try:
        return VERSION_STAMP.read_text().strip()[:16]
    except OSError:
        return ""


def asset_url(path: str) -> str:
    """The URL of the static file ``path`` (relative to ``static/``); a vendored file's
    carries the assets version, so that it can be cached for good."""
    url = f"/ui/static/{path}"
    version = assets_version() if path.startswith(VENDOR) else ""
    return f"{url}?v={version}" if version else url


def resolve(path: str, root: Path = STATIC) -> Path | None:
    """The file under ``root`` that ``path`` names, or None: no traversal (a symbolic link
    may not lead out either), no hidden files, only the kinds of :data:`CONTENT_TYPES`."""
    if not path or "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if any(not part or part.startswith(".") for part in parts):
        return None
    target = root.joinpath(*parts)
    if target.suffix not in CONTENT_TYPES:
        return None
    try:
        real = target.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root.resolve()) or not real.is_file():
        return None
    return real


def _not_found(request: Request) -> HTTPResponse:
    return problem(404, detail="No such file", instance=request.path, headers=STATIC_HEADERS)


@assets_bp.get("/ui/static/<path:path>", ctx_public=True)
async def static_file(request: Request, path: str) -> HTTPResponse:
    """A static file of the console, or a 404 problem."""
    args = request.get_args(keep_blank_values=True)
    unknown = sorted(set(args) - {"v"})
    if unknown:
        return problem(
            400,
            detail=f"unknown query parameter: {', '.join(unknown)}",
            instance=request.path,
            headers=STATIC_HEADERS,
        )
    target = resolve(path)
    if target is None:
        return _not_found(request)
    version = assets_version()
    current = bool(version) and path.startswith(VENDOR) and args.get("v") == version
    # Lower case: sanic.response.file adds its own unless this exact key is there.
    headers = {**STATIC_HEADERS, "cache-control": IMMUTABLE if current else REVALIDATE}
    content_type = CONTENT_TYPES[target.suffix]
    compressed = target.with_name(target.name + ".gz")
    if target.suffix in {".js", ".mjs", ".css", ".svg"}:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", "") and compressed.is_file():
            headers["Content-Encoding"] = "gzip"
            target = compressed
    return await file(
        target, request_headers=request.headers, mime_type=content_type, headers=headers
    )


@cache
def _docs_page() -> str:
    return environment().get_template("docs.html").render(asset=asset_url)


@assets_bp.get("/docs", ctx_public=True)
async def docs(request: Request) -> HTTPResponse:
    """Swagger UI for ``/docs/openapi.json``, from this process's own files."""
    args = request.get_args(keep_blank_values=True)
    if args:
        return problem(
            400,
            detail=f"unknown query parameter: {', '.join(sorted(args))}",
            instance=request.path,
            headers=DOCS_HEADERS,
        )
    return html(_docs_page(), headers=DOCS_HEADERS)


__all__ = ["CONTENT_TYPES", "DOCS_CSP", "asset_url", "assets_bp", "assets_version", "resolve"]
