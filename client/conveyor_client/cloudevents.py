"""CloudEvents 1.0 on Kafka as Conveyor's worker reads and writes them: pure functions
over bytes and header lists (no Kafka client needed).

* **Structured mode** (the default): the value is the JSON event, with the header
  ``content-type: application/cloudevents+json``.
* **Binary mode**: the value is the JSON data; the attributes travel as ``ce_*`` headers.

How Conveyor finds the instance an event is for: the ``conveyorinstance`` extension (an
instance id) wins; else the business key is the ``subject``, else the Kafka message key.
The event ``id`` is the event id Conveyor deduplicates on, so a producer that sends the
same fact twice must reuse its id (:func:`derived_id` makes one from a stable name).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"
INSTANCE_EXTENSION = "conveyorinstance"
"""The instance an event is for (or, on a command, the instance that sent it)."""
KIND_EXTENSION = "conveyorkind"
"""On what Conveyor publishes: ``event`` or ``command``."""
REPLY_NAMESPACE = uuid.UUID("3f0e5a3c-9a4e-5b8a-9d0c-6f1d2b7c4e10")
"""The UUID namespace of :func:`derived_id`."""

Mode = Literal["structured", "binary"]
Headers = Sequence[tuple[str, bytes]]


class InvalidCloudEvent(ValueError):
    """A Kafka message that is not a CloudEvent this library can read."""


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One CloudEvent: the required attributes, data (JSON), optional ones, extensions."""

    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = JSON_CONTENT_TYPE
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def instance_id(self) -> str | None:
        """The ``conveyorinstance`` extension, when there is one."""
        return self.extensions.get(INSTANCE_EXTENSION)


def derived_id(*parts: str) -> str:
    """A deterministic event id from stable names (e.g. a command's id and "reply"): the
    same parts give the same id, so a redelivered input yields a duplicate Conveyor
    ignores."""
    return str(uuid.uuid5(REPLY_NAMESPACE, "\x1f".join(parts)))


def now_text() -> str:
    """The current time as the ``time`` attribute wants it (RFC 3339, UTC)."""
    return datetime.now(UTC).isoformat()


def event_for(
    type: str,
    key: str,
    data: Mapping[str, Any] | None = None,
    *,
    source: str,
    id: str | None = None,
    instance_id: str | None = None,
    time: str | None = None,
) -> CloudEvent:
    """An event for the instance with business key ``key`` (the subject), or for the
    instance ``instance_id`` when given; a random id unless one is given."""
    if not type:
        raise ValueError("an event needs a type")
    if not key:
        raise ValueError("an event needs a business key")
    return CloudEvent(
        id=id or str(uuid.uuid4()),
        source=source,
        type=type,
        data=dict(data or {}),
        subject=key,
        time=time or now_text(),
        extensions={INSTANCE_EXTENSION: instance_id} if instance_id else {},
    )


def encode(event: CloudEvent, mode: Mode = "structured") -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) of a Kafka message carrying ``event``."""
    if mode == "binary":
        return _encode_binary(event)
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
    return _dumps(body), [("content-type", STRUCTURED_CONTENT_TYPE.encode())]


def _encode_binary(event: CloudEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
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
    return _dumps(event.data), headers


def decode(value: bytes | None, headers: Headers | None) -> CloudEvent:
    """The CloudEvent in a Kafka message, in either mode; :class:`InvalidCloudEvent` if
    it is not one."""
    by_name = {name.lower(): raw for name, raw in headers or ()}
    try:
        if any(name.startswith("ce_") for name in by_name):
            attrs = {k[3:]: v.decode() for k, v in by_name.items() if k.startswith("ce_")}
            data = json.loads(value) if value else None
            content_type = by_name["content-type"].decode() if "content-type" in by_name else None
        else:
            if not value:
                raise InvalidCloudEvent("an empty message is not a CloudEvent")
            body = json.loads(value)
            if not isinstance(body, dict):
                raise InvalidCloudEvent("a structured CloudEvent is a JSON object")
            data = body.pop("data", None)
            attrs = {k: v for k, v in body.items() if isinstance(v, str)}
            content_type = attrs.get("datacontenttype")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidCloudEvent(f"not a CloudEvent: {error}") from error
    missing = [n for n in ("id", "source", "type", "specversion") if not attrs.get(n)]
    if missing:
        raise InvalidCloudEvent(f"missing CloudEvents attribute(s): {', '.join(missing)}")
    if attrs["specversion"] != SPECVERSION:
        raise InvalidCloudEvent(f"unsupported specversion {attrs['specversion']!r}")
    core = {"id", "source", "type", "subject", "time", "specversion", "datacontenttype"}
    return CloudEvent(
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        data=data,
        subject=attrs.get("subject"),
        time=attrs.get("time"),
        datacontenttype=content_type,
        extensions={k: v for k, v in attrs.items() if k not in core},
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


__all__ = [
    "INSTANCE_EXTENSION",
    "KIND_EXTENSION",
    "CloudEvent",
    "InvalidCloudEvent",
    "Mode",
    "decode",
    "derived_id",
    "encode",
    "event_for",
    "now_text",
]
