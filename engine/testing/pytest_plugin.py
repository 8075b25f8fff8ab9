"""The pytest fixture ``workflow_env``: a fresh :class:`WorkflowEnvironment` per test.

Enable it in a ``conftest.py``::

    pytest_plugins = ["engine.testing.pytest_plugin"]

By default the environment holds the workflows of the ``workflows`` package (as the
runtime loads them); override the fixture ``conveyor_workflows`` to choose::

    @pytest.fixture
    def conveyor_workflows() -> list[type[Workflow[Any]]]:
        return [Order]

The clock starts at :data:`~engine.testing.DEFAULT_START` (override ``conveyor_start``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from engine.registry import Registry, WorkflowDefinition, load_workflows
from engine.testing.environment import DEFAULT_START, WorkflowEnvironment


@pytest.fixture
def conveyor_workflows() -> Sequence[WorkflowDefinition] | Registry:
    """The workflows ``workflow_env`` runs: classes, or a registry (default: the
    ``workflows`` package)."""
    return load_workflows()


@pytest.fixture
def conveyor_start() -> datetime:
    """Where ``workflow_env``'s clock starts."""
    return DEFAULT_START


@pytest.fixture
def workflow_env(
    conveyor_workflows: Sequence[WorkflowDefinition] | Registry, conveyor_start: datetime
) -> WorkflowEnvironment:
    """A fresh in-memory environment (deterministic ids, clock at ``conveyor_start``)."""
    if isinstance(conveyor_workflows, Registry):
        return WorkflowEnvironment(registry=conveyor_workflows, start=conveyor_start)
    return WorkflowEnvironment(*conveyor_workflows, start=conveyor_start)
