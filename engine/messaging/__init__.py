"""Kafka: clients, the CloudEvents codec, the worker and the outbox relay."""
