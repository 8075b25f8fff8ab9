"""A schedule for the worker test: an event every second (CONVEYOR_WORKFLOW_MODULES)."""

from datetime import timedelta

from engine.schedules import Schedule


class Heartbeat(Schedule):
    """Publishes ``test.heartbeat`` every second."""

    name = "heartbeat"
    every = timedelta(seconds=1)
    publishes = "test.heartbeat"
    missed = "skip"
