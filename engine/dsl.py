"""Declaring workflows: states, transitions, timers, schemas; validated when the class is defined.

A workflow is a class whose body reads like its state diagram::

    class Order(Workflow[OrderData]):
        name = "order"
        data_schema = OrderData
        events = {"payment.captured": PaymentCaptured}

        placed = State("Waiting for payment", initial=True)
        paid = State(on_enter=[announce_payment])
        cancelled = State(final=True)

        pay = placed.on("payment.captured").to(paid, guard=amount_matches) | placed.on(
            "payment.captured"
        ).to(payment_review)
        expire = placed.after(timedelta(minutes=30), name="payment_timeout").to(cancelled)

Defining the class compiles it into a `WorkflowSpec` (lookup tables for the pure step in
`engine.decide`) or raises `DefinitionError` naming the workflow and the state at fault.

This is the public module to declare workflows with. The building blocks (`State`, the
routes, `RetryPolicy`, the contexts) live in `engine.declarations`, below `engine.spec`,
which compiles them; this module re-exports them and adds `Workflow`, which compiles
itself through `engine.spec` when subclassed. Imports point one way:
``dsl -> spec -> declarations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Literal

from pydantic import BaseModel

from engine.declarations import (
    CANCEL_EVENT,
    DEFAULT_RETRY,
    Action,
    ActionContext,
    DataT,
    EmptyPayload,
    EventRoute,
    Guard,
    GuardContext,
    MessageKind,
    OperatorCancel,
    PayloadT,
    PendingMessage,
    RetryPolicy,
    State,
    Timer,
    TimerRoute,
    Transition,
    Transitions,
    on,
    on_any,
    on_cancel,
)
from engine.spec import WorkflowSpec, compile_workflow

__all__ = [
    "CANCEL_EVENT",
    "DEFAULT_RETRY",
    "Action",
    "ActionContext",
    "DataT",
    "EmptyPayload",
    "EventRoute",
    "Guard",
    "GuardContext",
    "MessageKind",
    "OperatorCancel",
    "PayloadT",
    "PendingMessage",
    "RetryPolicy",
    "State",
    "Timer",
    "TimerRoute",
    "Transition",
    "Transitions",
    "Workflow",
    "on",
    "on_any",
    "on_cancel",
]


class Workflow(Generic[DataT]):
    """Base class of workflow definitions; subclasses are validated and compiled on definition.

    ``DataT`` documents the data model (set ``data_schema`` to the same class).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    data_schema: ClassVar[type[BaseModel]]
    events: ClassVar[Mapping[str, type[BaseModel]]] = {}
    start_event: ClassVar[str | None] = None
    """An event type (from Kafka) that starts a new instance of this workflow."""
    key_reuse: ClassVar[Literal["never", "after_end"]] = "never"
    """May a start take a business key whose instance has ended (``after_end``)?"""
    spec: ClassVar[WorkflowSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.spec = compile_workflow(cls)

    @classmethod
    def initial_data_from(cls, start_payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """Turn a ``start_event`` payload into initial data; override to reshape it."""
        return start_payload
