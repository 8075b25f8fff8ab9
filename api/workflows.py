"""``/v1/workflows``: definitions, diagrams, starting instances, lookup by business key."""

from __future__ import annotations

import contextlib
import time
import uuid

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sanic import Blueprint, HTTPResponse, Request

from api import idempotency
from api.context import check_storable, json_response, metrics_of, runtime_of
from api.key_reuse import EARLIER_LIMIT, earlier_json
from api.schemas import StartInstance, VersionQuery
from api.tracing import request_id_of, tag_request
from api.validation import header_text, parse_body, parse_query, path_segment
from engine.decide import FieldError
from engine.errors import InstanceNotFound, InvalidRequest, PayloadInvalid
from engine.introspect import describe, mermaid
from engine.model import StartResult

bp = Blueprint("workflows", url_prefix="/v1/workflows")


class DiagramQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int | None = Field(None, ge=1, le=2**31 - 1)
    instance: uuid.UUID | None = None


@bp.get("/", ctx_scope="read")
async def list_workflows(request: Request) -> HTTPResponse:
    """Every registered workflow with its versions."""
    registry = runtime_of(request).registry
    latest: dict[str, dict[str, object]] = {}
    for definition in registry.all():  # by name, then ascending version
        spec = definition.spec
        latest[spec.name] = {
            "name": spec.name,
            "description": spec.description or None,
            "latest_version": spec.version,
            "versions": list(registry.versions(spec.name)),
            "start_event": spec.start_event,
        }
    return json_response({"items": list(latest.values())})


@bp.get("/<name:str>", ctx_scope="read")
async def get_workflow(request: Request, name: str) -> HTTPResponse:
    """A workflow version (default: the latest): states, transitions, events, timers."""
    query = parse_query(request, VersionQuery)
    registry = runtime_of(request).registry
    definition = registry.get(name, query.version)
    body = describe(definition)
    body["versions"] = list(registry.versions(name))
    return json_response(body)


@bp.get("/<name:str>/diagram", ctx_scope="read")
async def get_diagram(request: Request, name: str) -> HTTPResponse:
    """A Mermaid state diagram; ``?instance=ID`` highlights that instance's current state."""
    query = parse_query(request, DiagramQuery)
    runtime = runtime_of(request)
    definition = runtime.registry.get(name, query.version)
    highlight = None
    if query.instance is not None:
        instance = await runtime.get(query.instance)
        if instance.workflow != name:
            raise InstanceNotFound(f"instance {instance.id} is not a {name} instance")
        definition = runtime.registry.get(name, instance.version)
        if instance.state in definition.spec.states:
            highlight = instance.state
    return HTTPResponse(
        mermaid(definition, highlight=highlight), content_type="text/plain; charset=utf-8"
    )


@bp.post("/<name:str>/instances", ctx_scope="write")
async def start_instance(request: Request, name: str) -> HTTPResponse:
    """Start an instance. With ``Idempotency-Key``, one request per key (and API key) runs:
    a retry gets its response, a different request under the key 422 (see api.idempotency).
    """
    body = parse_body(request, StartInstance)
    check_storable(body.data, "data")
    runtime = runtime_of(request)
    runtime.registry.get(name, body.version)  # 404 before anything is stored
    tag_request(request, workflow=name)
    key = idempotency_key(request)
    held: idempotency.Claim | None = None
    start_key: str | None = None
    if key is not None:  # the request's digest matters only with an Idempotency-Key
        scope = idempotency.KeyScope(request.ctx.api_key.id, key, f"start:{name}")
        digest = idempotency.request_hash(name, body.model_dump(mode="json"))
        claimed = await idempotency.claim(request.app.ctx.db, scope, digest)
        if isinstance(claimed, idempotency.StoredResponse):
            return _replay(claimed, replayed=True)
        held = claimed
        start_key = _start_key(scope)
    try:
        result = await _start(request, name, body, start_key)
    except BaseException:
        if held is not None:  # nothing to store: the key may be used again
            with contextlib.suppress(Exception):  # else the claim's lease runs out
                await idempotency.release(request.app.ctx.db, held)
        raise
    instance = result.instance
    tag_request(request, instance=str(instance.id))
    metrics_of(request).transitions.inc(
        name, "started" if result.created else "duplicate", version=instance.version
    )
    response = idempotency.StoredResponse(
        201, orjson.dumps(runtime_of(request).instance_json(instance))
    )
    if held is None:
        return _replay(response, replayed=not result.created, instance_id=str(instance.id))
    stored = await idempotency.complete(request.app.ctx.db, held, response)
    if stored is not response:  # a request that took the claim over answered first
        return _replay(stored, replayed=True)
    return _replay(response, replayed=not result.created, instance_id=str(instance.id))


async def _start(
    request: Request, name: str, body: StartInstance, start_key: str | None
) -> StartResult:
    runtime = runtime_of(request)
    started = time.perf_counter()  # by hand, not `timed`: an async context manager costs
    try:
        return await runtime.start(
            name,
            body.business_key,
            body.data,
            idempotency_key=start_key,
            version=body.version,
            source="http",
            request_id=request_id_of(request),
            # History and state_changed name the start by the client's own key (not
            # start_key, which holds an API key id); without one, by the instance id.
            event_id=idempotency_key(request),
        )
    except PayloadInvalid as exc:
        # The runtime names fields of the data; the client sent them under "data".
        errors = [
            FieldError(f"data.{e.path}" if e.path else "data", e.message) for e in exc.field_errors
        ]
        raise PayloadInvalid(str(exc), errors) from None
    finally:
        metrics_of(request).commit_latency.observe(time.perf_counter() - started, "start")


def _start_key(scope: idempotency.KeyScope) -> str:
    """The runtime's start key for an HTTP Idempotency-Key: scoped by the API key too, so
    that neither another client's key nor a Kafka start's CloudEvent id can collide."""
    return f"http:{scope.api_key_id}:{scope.key}"


@bp.get("/<name:str>/instances/<business_key:str>", ctx_scope="read")
async def find_instance(request: Request, name: str, business_key: str) -> HTTPResponse:
    """The instance of ``name`` with ``business_key``, percent-encoded in the path as one
    segment (``a%2Fb`` for ``a/b``, ``z%C3%BCrich`` for ``zürich``): the one holding the
    key, with the ones that held it before (key reuse) in ``earlier``."""
    runtime = runtime_of(request)
    runtime.registry.get(name)
    business_key = path_segment(business_key, "business key")
    if "\x00" in business_key:
        raise InstanceNotFound(f"no {name} instance with business key {business_key!r}")
    instance, earlier = await runtime.find_with_earlier(name, business_key, limit=EARLIER_LIMIT)
    tag_request(request, workflow=name, instance=str(instance.id))
    return json_response({**runtime.instance_json(instance), "earlier": earlier_json(earlier)})


def idempotency_key(request: Request) -> str | None:
    key: str | None = request.headers.get(idempotency.HEADER)
    if key is None:
        return None
    if not key or len(key) > idempotency.MAX_KEY_LENGTH or "\x00" in key:
        raise InvalidRequest(
            f"{idempotency.HEADER} must be 1 to {idempotency.MAX_KEY_LENGTH} characters"
        )
    return header_text(key, idempotency.HEADER)


def _replay(
    stored: idempotency.StoredResponse, *, replayed: bool, instance_id: str | None = None
) -> HTTPResponse:
    if instance_id is None:
        instance_id = orjson.loads(stored.body)["id"]
    headers = {"Location": f"/v1/instances/{instance_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return HTTPResponse(
        stored.body, status=stored.status, headers=headers, content_type="application/json"
    )
