"""A small workflow with an SLA, for the tests of the SLA gauge (not loaded by default)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from engine.dsl import State, Workflow

ANSWER_SLA = timedelta(minutes=5)


class TicketData(BaseModel):
    subject: str


class Answer(BaseModel):
    text: str = ""


class Ticket(Workflow[TicketData]):
    """A support ticket should be answered within five minutes."""

    name = "test.ticket"
    version = 1
    data_schema = TicketData
    events = {"ticket.answered": Answer}

    waiting = State("Waiting for an answer", initial=True, sla=ANSWER_SLA)
    answered = State(final=True)

    answer = waiting.on("ticket.answered").to(answered)
