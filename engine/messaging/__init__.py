"""Kafka: clients, the worker and the outbox relay (the wire format is :mod:`engine.wire`)."""
