"""The README's schedule: a nightly payment reconciliation in Berlin's wall clock."""

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from engine.dsl import State, Workflow
from engine.schedules import Schedule


class BusinessDay(BaseModel):
    business_date: str
    scope: str = "all"


class PaymentReconciliation(Workflow[BusinessDay]):
    """Compare the payment provider's settlement report with the orders of one day."""

    name = "payment.reconciliation"
    version = 1
    data_schema = BusinessDay

    waiting = State("Waiting for the settlement report", initial=True)
    reconciled = State(final=True)

    done = waiting.on("settlement.matched").to(reconciled)


class NightlyReconciliation(Schedule):
    """Reconcile yesterday's payments every night at 02:30, Berlin time."""

    name = "nightly-reconciliation"
    cron = "30 2 * * *"
    timezone = "Europe/Berlin"
    starts = PaymentReconciliation
    business_key = "reconcile-{local:%Y-%m-%d}"
    missed = "latest"  # after downtime, run the last missed night once

    @staticmethod
    def data(tick: datetime) -> dict[str, Any]:
        night = tick.astimezone(NightlyReconciliation.spec.zone).date()
        return {"business_date": (night - timedelta(days=1)).isoformat()}


class WaveRelease(Schedule):
    """Every 15 minutes, tell the warehouse to release the next pick wave."""

    name = "wave-release"
    every = timedelta(minutes=15)
    publishes = "warehouse.wave_release_due"
    business_key = "wave-{tick:%Y%m%dT%H%M}"
    missed = "skip"  # a late wave is no use: wait for the next one
