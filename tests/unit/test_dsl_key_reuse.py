"""The key reuse policy of a workflow: declared on the class, checked when it is defined."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from engine.dsl import State, Workflow
from engine.errors import DefinitionError
from engine.spec import KEY_REUSE_POLICIES
from tests.key_reuse_flows import Ticket, TicketV2


class Data(BaseModel):
    key: str


def test_a_workflow_never_reuses_a_key_unless_it_says_so() -> None:
    assert TicketV2.spec.key_reuse == "never"
    assert Ticket.spec.key_reuse == "after_end"
    assert KEY_REUSE_POLICIES == ("never", "after_end")


def test_a_subclass_inherits_the_policy() -> None:
    class Later(Ticket):
        version = 3

    assert Later.spec.key_reuse == "after_end"


@pytest.mark.parametrize("policy", ["always", "AFTER_END", "", None, True])
def test_rejects_an_unknown_policy_naming_the_workflow_and_the_choices(policy: Any) -> None:
    with pytest.raises(DefinitionError) as info:

        class Reuser(Workflow[Data]):
            name = "reuser"
            version = 4
            data_schema = Data
            key_reuse = policy

            start = State(initial=True)
            done = State(final=True)
            finish = start.on("finish").to(done)

    message = str(info.value)
    assert message.startswith("reuser v4: `key_reuse` must be one of 'never', 'after_end'")
    assert repr(policy) in message


def test_key_reuse_is_not_a_state_name() -> None:
    with pytest.raises(DefinitionError, match="'key_reuse' is a reserved attribute"):

        class Clash(Workflow[Data]):
            name = "clash"
            data_schema = Data

            start = State(initial=True)
            key_reuse = State(final=True)  # type: ignore[assignment]
            finish = start.on("finish").to(key_reuse)
