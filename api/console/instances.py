"""The console's instance list: every filter of ``GET /v1/instances``, cursor paging, and
the search box (a business key prefix)."""

from __future__ import annotations

from urllib.parse import urlencode

from sanic import HTTPResponse, Request, redirect

from api.console.render import page
from api.console.views import bp, signed_in
from api.instances import instance_filter
from engine import data_filters

FILTERS = (
    "workflow",
    "version",
    "state",
    "status",
    "business_key_prefix",
    "in_state_longer_than",
    "sla_breached",
    "created_after",
    "created_before",
)


@bp.get("/instances", ctx_public=True)
@signed_in()
async def instance_list(request: Request) -> HTTPResponse:
    """Instances newest first (stuck filters: longest in their state first)."""
    tidy = _tidy(request)
    if tidy is not None:
        return redirect(f"/ui/instances?{urlencode(tidy)}" if tidy else "/ui/instances")
    query, filters = instance_filter(request)
    runtime = request.app.ctx.runtime
    found = await runtime.list_instances(filters, limit=query.limit, cursor=query.cursor)
    items = [runtime.instance_json(i) for i in found.items]
    kept = [(k, v) for k, vs in request.args.items() if k != "cursor" for v in vs]
    first_url = f"/ui/instances?{urlencode(kept)}"
    next_url = (
        f"/ui/instances?{urlencode([*kept, ('cursor', found.next_cursor)])}"
        if found.next_cursor
        else None
    )
    data_text = ", ".join(
        f"{k.removeprefix(data_filters.PREFIX)}={v[0]}"
        for k, v in request.args.items()
        if k.startswith(data_filters.PREFIX)
    )
    return page(
        request,
        "instances.html",
        active="instances",
        items=items,
        next_url=next_url,
        values={k: request.args.get(k, "") for k in FILTERS},
        data_text=data_text,
        workflows=sorted({d.spec.name for d in runtime.registry.all()}),
        first_page=query.cursor is None,
        first_url=first_url,
        limit=query.limit,
    )


def _tidy(request: Request) -> list[tuple[str, str]] | None:
    """The query without empty fields, with the form's ``data`` box (``field=value, ...``)
    as ``data.<field>`` parameters; None when it is tidy already."""
    pairs: list[tuple[str, str]] = [(k, v) for k, vs in request.args.items() for v in vs]
    tidy: list[tuple[str, str]] = []
    changed = False
    for name, value in pairs:
        value = value.strip()
        if not value:
            changed = True
            continue
        if name == "data":
            changed = True
            for part in value.split(","):
                field, sep, wanted = part.partition("=")
                if sep and field.strip():
                    tidy.append((f"{data_filters.PREFIX}{field.strip()}", wanted.strip()))
            continue
        tidy.append((name, value))
    return tidy if changed else None
