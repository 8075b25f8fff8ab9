"""A workflow for the console's browser tests, loaded by their ``conveyor dev`` process.

Its action fails while a marker file named after the instance's key exists in
``CONVEYOR_TEST_FAULT_DIR``: a test makes an instance fail for real in another process,
removes the marker (the outside service "is fixed"), and retries it from the console.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from engine.dsl import ActionContext, RetryPolicy, State, Workflow

FAULT_DIR_VARIABLE = "CONVEYOR_TEST_FAULT_DIR"


class DeskData(BaseModel):
    key: str
    label: str = ""


class Print(BaseModel):
    label: str = Field(min_length=1)


def _failing(key: str) -> bool:
    folder = os.environ.get(FAULT_DIR_VARIABLE)
    return folder is not None and (Path(folder) / key).exists()


async def print_label(ctx: ActionContext[DeskData, Print]) -> None:
    if _failing(ctx.data.key):
        raise RuntimeError(f"label printer offline for {ctx.data.key}")
    ctx.data.label = ctx.payload.label


class LabelDesk(Workflow[DeskData]):
    """Prints a parcel's label; the printer can be offline."""

    name = "test.label_desk"
    version = 1
    data_schema = DeskData
    events = {"label.print": Print}

    waiting = State("Waiting for a label", initial=True)
    printed = State("Label printed")
    shipped = State(final=True)

    print_it = waiting.on("label.print").to(
        printed, action=print_label, retry=RetryPolicy(attempts=1)
    )
    ship = printed.on("label.ship").to(shipped)
