"""Rendering console pages: Jinja2 templates (autoescaped) and the headers every page
carries (a Content-Security-Policy that allows only this origin's scripts, no framing,
no caching of pages that show business data)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from sanic import HTTPResponse, Request, html

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
"""No inline script and nothing from another origin. Inline styles are allowed: the
diagram renderer styles the SVG it draws."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, Chromium sends ``Origin: null`` on the console's own form
    # posts, which the same-origin check (sessions.csrf_ok) must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("api.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["pretty"] = pretty
    return env


def when(value: datetime | str | None) -> Markup:
    """A time as ``<time>``: UTC in the page and on hover; the console's script shows it
    in the browser's zone."""
    if value is None:
        return Markup("&ndash;")
    text = value if isinstance(value, str) else value.isoformat()
    shown = text.replace("T", " ")[:19] + " UTC" if "T" in text else text
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(escape(text), escape(shown))


def pretty(value: Any) -> str:
    """JSON, indented."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTTPResponse:
    """Render ``template`` with ``context`` (plus the request and its session)."""
    body = (
        environment()
        .get_template(template)
        .render(request=request, session=getattr(request.ctx, "console", None), **context)
    )
    return html(body, status=status, headers=SECURITY_HEADERS)


__all__ = ["CSP", "SECURITY_HEADERS", "environment", "page", "pretty", "when"]
