"""Kafka clients built from settings, and a readiness probe.

Producers are idempotent (``enable_idempotence=True`` implies ``acks=all``): a retried
send never writes a message twice within a producer session.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient

from engine.errors import DependencyUnavailable
from engine.settings import Settings


def create_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_servers(),
        "client_id": "conveyor",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        "request_timeout_ms": 15000,
        "max_batch_size": 256 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def create_consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_servers(),
        "client_id": "conveyor-worker",
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 500,
        "session_timeout_ms": 30000,
        "heartbeat_interval_ms": 3000,
        "max_poll_interval_ms": 300000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


class KafkaProbe:
    """Answers "does Kafka answer a metadata request now?" with a bounded wait."""

    def __init__(self, settings: Settings) -> None:
        self._servers = settings.kafka_servers()
        self._client: AIOKafkaClient | None = None
        self._lock = asyncio.Lock()

    async def check(self, timeout: float) -> int:
        """Return the number of brokers; raise DependencyUnavailable when Kafka is down."""
        try:
            async with asyncio.timeout(timeout):
                async with self._lock:
                    if self._client is None:
                        client = AIOKafkaClient(
                            bootstrap_servers=self._servers,
                            client_id="conveyor-probe",
                            request_timeout_ms=int(timeout * 1000),
                        )
                        await client.bootstrap()
                        self._client = client
                    metadata = await self._client.fetch_all_metadata()
                    brokers = len(metadata.brokers())
        except Exception as exc:  # any failure to answer means "down"; the reason is kept
            await self.close()
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise DependencyUnavailable(f"kafka: {reason}") from exc
        if brokers == 0:
            raise DependencyUnavailable("kafka: the cluster reports no brokers")
        return brokers

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Closing a broken client must not mask the check's result.
            with contextlib.suppress(Exception):
                await client.close()
