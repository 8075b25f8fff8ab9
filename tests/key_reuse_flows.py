"""Workflows for the key reuse tests: a ticket whose number may be used again once the
ticket is closed or withdrawn (``key_reuse = "after_end"``), and a version 2 that does not
allow it (the version being started decides)."""

from __future__ import annotations

from pydantic import BaseModel

from engine.dsl import State, Workflow, on_cancel


class TicketData(BaseModel):
    number: str
    topic: str = ""


class Ticket(Workflow[TicketData]):
    """A support ticket: open until closed; its number may be reused once it has ended."""

    name = "test.ticket"
    version = 1
    data_schema = TicketData
    key_reuse = "after_end"

    open = State("Open", initial=True)
    answered = State("Answered")
    closed = State("Closed", final=True)
    withdrawn = State("Withdrawn", cancelled=True)

    answer = open.on("ticket.answered").to(answered)
    close = answered.on("ticket.closed").to(closed)
    withdraw = on_cancel(open, answered).to(withdrawn)


class TicketV2(Workflow[TicketData]):
    """Version 2 keeps one ticket per number, ever (the default ``key_reuse``)."""

    name = "test.ticket"
    version = 2
    data_schema = TicketData

    open = State("Open", initial=True)
    closed = State("Closed", final=True)

    close = open.on("ticket.closed").to(closed)
