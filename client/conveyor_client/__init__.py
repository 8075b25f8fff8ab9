"""Conveyor's client library: call the HTTP API, publish CloudEvents, handle commands."""

from conveyor_client.cloudevents import CloudEvent, decode, derived_id, encode, event_for

__all__ = ["CloudEvent", "decode", "derived_id", "encode", "event_for"]
