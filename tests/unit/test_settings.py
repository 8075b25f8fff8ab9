"""Settings come from CONVEYOR_* variables, with defaults for the local stack."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.settings import Settings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONVEYOR_DATABASE_URL", "CONVEYOR_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert "127.0.0.1" in settings.database_url
    assert settings.kafka_servers() == ["127.0.0.1:9092"]


def test_environment_overrides_and_lists_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_WORKFLOW_MODULES", "workflows, acme.flows")
    monkeypatch.setenv("CONVEYOR_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("CONVEYOR_HTTP_PORT", "9000")
    settings = Settings()
    assert settings.workflow_modules == ["workflows", "acme.flows"]
    assert settings.kafka_servers() == ["a:1", "b:2"]
    assert settings.http_port == 9000


def test_plain_postgres_urls_get_the_asyncpg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://u:p@db:5432/x")
    assert Settings().database_url == "postgresql+asyncpg://u:p@db:5432/x"


def test_invalid_values_are_rejected_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_worker_services_default_to_all_and_take_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_WORKER_SERVICES", raising=False)
    assert Settings().worker_services == ["consumer", "relay", "scheduler", "retention"]
    monkeypatch.setenv("CONVEYOR_WORKER_SERVICES", "relay, relay,consumer")
    assert Settings().worker_services == ["relay", "consumer"]
    for bad in ("", "consumer,bogus"):
        monkeypatch.setenv("CONVEYOR_WORKER_SERVICES", bad)
        with pytest.raises(ValidationError, match="worker_services"):
            Settings()
