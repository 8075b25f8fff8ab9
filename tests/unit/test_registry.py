"""The registry: versions, latest lookup, loading workflow modules."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from engine.dsl import State, Workflow
from engine.errors import ConfigurationError, DefinitionError, UnknownWorkflow
from engine.registry import Registry, load_workflows
from workflows.order import Order
from workflows.warehouse import Inbound, Outbound


class Data(BaseModel):
    pass


def make(version: int) -> type[Workflow[Data]]:
    """A fresh workflow class named "thing" at ``version``."""

    class Thing(Workflow[Data]):
        name = "thing"
        data_schema = Data
        a = State(initial=True)

    return type(f"ThingV{version}", (Thing,), {"version": version})


def test_get_without_version_returns_the_latest() -> None:
    registry = Registry()
    v1, v2 = make(1), make(2)
    registry.register(v2)
    registry.register(v1)
    assert registry.get("thing") is v2
    assert registry.get("thing", 1) is v1
    assert registry.versions("thing") == (1, 2)


def test_duplicate_name_and_version_is_a_definition_error() -> None:
    registry = Registry()
    registry.register(make(1))
    with pytest.raises(DefinitionError, match=r"thing v1: defined twice"):
        registry.register(make(1))


def test_registering_the_same_class_twice_is_harmless() -> None:
    registry = Registry()
    registry.register(Order)
    registry.register(Order)
    assert len(registry) == 1


def test_unknown_workflow_or_version_raises_unknown_workflow() -> None:
    registry = Registry()
    registry.register(Order)
    with pytest.raises(UnknownWorkflow, match="registered: order"):
        registry.get("invoice")
    with pytest.raises(UnknownWorkflow, match="no version 9"):
        registry.get("order", 9)


def test_load_workflows_finds_every_workflow_in_the_package() -> None:
    registry = load_workflows(["workflows"])
    assert set(registry.all()) == {Order, Inbound, Outbound}
    assert "order" in registry


def test_load_workflows_accepts_a_single_module() -> None:
    assert load_workflows(["workflows.order"]).all() == (Order,)


def test_unknown_module_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"workflow module 'workflows\.nope' not found"):
        load_workflows(["workflows.nope"])
