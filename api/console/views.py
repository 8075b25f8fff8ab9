"""The console's pages: signing in and out, and the overview.

Every route is public to the API key middleware (a browser sends no key): the console
checks its own session instead (:func:`signed_in`), sends a browser without one to the
sign-in page, and refuses an action the session's key may not take (403) even when the
page did not offer it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from sanic import Blueprint, HTTPResponse, Request, redirect

from api.console import sessions
from api.console.render import page
from api.stats import StatsCache, stats_answer
from engine.auth import Scope
from engine.errors import ConveyorError
from engine.messaging.lag import LagCache
from engine.store import dead_letters as dead_letter_rows
from engine.store.gauges import outbox_backlog

bp = Blueprint("console", url_prefix="/ui")

Handler = Callable[..., Awaitable[HTTPResponse]]
MAX_FORM_BYTES = 64 * 1024


def signed_in(scope: Scope = "read") -> Callable[[Handler], Handler]:
    """The route needs a live session whose key has ``scope``; a state-changing request
    also needs the session's CSRF token (form field ``csrf``) from this origin."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            now = request.app.ctx.runtime.clock()
            session = await sessions.current(request, now)
            if session is None:
                if request.method in ("GET", "HEAD"):
                    return redirect(f"/ui/login?next={_next(request)}")
                return _refused(request, 401, "Your session has ended: sign in again.")
            request.ctx.console = session
            if request.method not in ("GET", "HEAD"):
                form: Any = request.form or {}
                if not sessions.csrf_ok(request, session, form.get("csrf")):
                    return _refused(request, 403, "This form has expired: reload the page.")
            if not session.allows(scope):
                return _refused(
                    request,
                    403,
                    f"Your API key ({session.key.name}) may not do this: it "
                    f"needs the {scope} scope.",
                )
            try:
                return await handler(request, *args, **kwargs)
            except ConveyorError as error:
                return _refused(request, error.status_code, str(error))

        return checked

    return wrap


def _next(request: Request) -> str:
    path = request.path
    return path if path.startswith("/ui/") and "//" not in path else "/ui/"


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/ui/") or "//" in value or "\\" in value:
        return "/ui/"
    return value


def _refused(request: Request, status: int, message: str) -> HTTPResponse:
    status = status if 400 <= status < 600 else 500
    return page(request, "error.html", status=status, message=message, status_code=status)


@bp.get("/", ctx_public=True)
@signed_in()
async def home(request: Request) -> HTTPResponse:
    return redirect("/ui/overview")


@bp.get("/login", ctx_public=True)
async def login_form(request: Request) -> HTTPResponse:
    return page(request, "login.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/login", ctx_public=True)
async def login(request: Request) -> HTTPResponse:
    if not sessions.same_origin(request):
        return _refused(request, 403, "Sign in from the console's own page.")
    form: Any = request.form or {}
    secret = form.get("api_key") or ""
    target = _safe_next(form.get("next"))
    now = request.app.ctx.runtime.clock()
    opened = await sessions.sign_in(request, secret, now) if secret.isascii() else None
    if opened is None:
        return page(
            request, "login.html", status=401, next=target, error="That API key is not valid."
        )
    session, token = opened
    response = redirect(target, status=303)
    sessions.set_cookie(request, response, token, session.expires_at)
    return response


@bp.post("/logout", ctx_public=True)
@signed_in()
async def logout(request: Request) -> HTTPResponse:
    await sessions.sign_out(request)
    response = redirect("/ui/login", status=303)
    sessions.clear_cookie(request, response)
    return response


@bp.get("/overview", ctx_public=True)
@signed_in()
async def overview(request: Request) -> HTTPResponse:
    runtime = request.app.ctx.runtime
    cache: StatsCache | None = getattr(request.app.ctx, "stats_cache", None)
    if cache is None:
        cache = request.app.ctx.stats_cache = StatsCache()
    stats = await cache.get(None, functools.partial(stats_answer, runtime, None))
    letters = await dead_letter_rows.pending_by_reason(runtime.db)
    backlog = await outbox_backlog(runtime.db)
    lag_cache: LagCache | None = getattr(request.app.ctx, "lag_cache", None)
    if lag_cache is None:
        lag_cache = request.app.ctx.lag_cache = LagCache()
    lag = await lag_cache.get(request.app.ctx.settings)
    now = runtime.clock()
    age = (now - backlog.oldest_created_at).total_seconds() if backlog.oldest_created_at else 0
    return page(
        request,
        "overview.html",
        stats=stats,
        dead_letters=letters,
        outbox=backlog,
        outbox_age=age,
        lag=lag,
    )


__all__ = ["bp", "signed_in"]
