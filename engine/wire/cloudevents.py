"""CloudEvents 1.0 on Kafka: structured mode (JSON value) and binary mode (ce_* headers).

Pure functions over bytes and header lists, so the worker, the outbox and tests share
one codec. Decoding errors are ``InvalidMessage``: its ``reason`` is the dead letter's
reason, its message the dead letter's detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from engine.errors import ConveyorError

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"
REQUIRED = ("id", "source", "specversion", "type")
CORE_ATTRIBUTES = frozenset(
    {"id", "source", "type", "subject", "time", "specversion", "datacontenttype"}
)

Headers = Sequence[tuple[str, bytes]]

InvalidReason = Literal[
    "undecodable",  # not a CloudEvent: bad JSON, bad header encoding, wrong specversion
    "missing_attributes",  # a required CloudEvents attribute is missing
]


class InvalidMessage(ConveyorError):
    """A Kafka message that is not a usable CloudEvent; it goes to the dead-letter topic
    with ``reason`` (one of the dead-letter reasons)."""

    status_code = 400
    title = "Invalid CloudEvent"

    def __init__(self, message: str, reason: InvalidReason = "undecodable") -> None:
        super().__init__(message)
        self.reason: InvalidReason = reason


@dataclass(frozen=True, slots=True)
class CloudEvent:
    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = JSON_CONTENT_TYPE
    extensions: Mapping[str, str] = field(default_factory=dict)


def encode_structured(event: CloudEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Return (value, headers) for a structured-mode message."""
    body: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        body["subject"] = event.subject
    if event.time is not None:
        body["time"] = event.time
    if event.datacontenttype is not None:
        body["datacontenttype"] = event.datacontenttype
    body.update(event.extensions)
    if event.data is not None:
        body["data"] = event.data
    return orjson.dumps(body), [("content-type", STRUCTURED_CONTENT_TYPE.encode())]


def encode_binary(event: CloudEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Return (value, headers) for a binary-mode message: attributes as ce_* headers."""
    headers = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("content-type", (event.datacontenttype or JSON_CONTENT_TYPE).encode()),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    if event.time is not None:
        headers.append(("ce_time", event.time.encode()))
    headers.extend((f"ce_{k}", v.encode()) for k, v in event.extensions.items())
    return orjson.dumps(event.data), headers


def decode(value: bytes | None, headers: Headers) -> CloudEvent:
    """Decode a Kafka message in either mode; raise InvalidMessage with a clear reason."""
    header_map: dict[str, bytes] = {}
    for key, raw in headers or ():
        header_map[key.lower()] = raw
    if "ce_specversion" in header_map or "ce_id" in header_map or "ce_type" in header_map:
        return _decode_binary(value, header_map)
    return _decode_structured(value)


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"header {name} is not UTF-8") from exc


def _decode_binary(value: bytes | None, headers: Mapping[str, bytes]) -> CloudEvent:
    attrs = {k[3:]: _text(v, k) for k, v in headers.items() if k.startswith("ce_")}
    _require(attrs)
    content_type = (
        _text(headers["content-type"], "content-type") if "content-type" in headers else None
    )
    data: Any = None
    if value:
        if content_type is None or "json" in content_type:
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise InvalidMessage(f"data is not valid JSON: {exc}") from exc
        else:
            raise InvalidMessage(f"unsupported content-type {content_type!r}; expected JSON")
    return _build(attrs, data, content_type)


def _decode_structured(value: bytes | None) -> CloudEvent:
    if not value:
        raise InvalidMessage("empty message: neither a structured CloudEvent nor ce_* headers")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"value is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidMessage("structured CloudEvent must be a JSON object")
    data = body.pop("data", None)
    if "data_base64" in body:
        raise InvalidMessage("data_base64 is not supported; send JSON data")
    attrs: dict[str, str] = {}
    for key, raw in body.items():
        if not isinstance(raw, str):
            raise InvalidMessage(f"attribute {key!r} must be a string")
        attrs[key] = raw
    _require(attrs)
    return _build(attrs, data, attrs.get("datacontenttype"))


def _require(attrs: Mapping[str, str]) -> None:
    missing = [name for name in REQUIRED if not attrs.get(name)]
    if missing:
        raise InvalidMessage(
            f"missing CloudEvents attribute(s): {', '.join(missing)}", "missing_attributes"
        )
    if attrs["specversion"] != SPECVERSION:
        raise InvalidMessage(f"unsupported specversion {attrs['specversion']!r}; expected 1.0")
    if "time" in attrs:
        try:
            datetime.fromisoformat(attrs["time"].replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidMessage(f"attribute time is not RFC 3339: {attrs['time']!r}") from exc


def _build(attrs: Mapping[str, str], data: Any, content_type: str | None) -> CloudEvent:
    return CloudEvent(
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        data=data,
        subject=attrs.get("subject"),
        time=attrs.get("time"),
        datacontenttype=content_type,
        extensions={k: v for k, v in attrs.items() if k not in CORE_ATTRIBUTES},
    )
