"""The payment service: charges and refunds the shop's orders when ``shop.order`` asks.

python -m examples.shop.payments      # KAFKA_BOOTSTRAP_SERVERS, SHOP_TOPIC_PREFIX, SHOP_LEDGER
"""

from __future__ import annotations

import logging
import os
from decimal import Decimal

from conveyor_client.handlers import Command, Handlers, Reply
from examples.shop import ledger

LIMIT = Decimal("1000")
"""Charges above this are declined."""

handlers = Handlers(service="shop-payments")


class BankTimeout(Exception):
    """The bank did not answer (the example's transient failure)."""


@handlers.command("payment.charge_requested", attempts=4)
def charge(command: Command) -> Reply:
    """Charge the order, or decline it; a blocking call, so it runs in a thread."""
    order_id = str(command.data["order_id"])
    if order_id.endswith("7") and command.attempt == 1:
        raise BankTimeout(f"the bank did not answer for {order_id}")  # retried
    if Decimal(str(command.data["amount"])) > LIMIT:
        return Reply("payment.declined", {"reason": f"over the limit of {LIMIT}"})
    payment_id = ledger.charge(command.id, order_id, str(command.data["amount"]))
    return Reply("payment.charged", {"payment_id": payment_id})


@handlers.command("payment.refund_requested", attempts=4)
def refund(command: Command) -> Reply:
    """Refund a charge, once per command however often the command arrives."""
    refund_id = ledger.refund(
        command.id,
        str(command.data["order_id"]),
        str(command.data["payment_id"]),
        str(command.data["amount"]),
    )
    return Reply("payment.refunded", {"refund_id": refund_id})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s payments %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    handlers.run(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topic_prefix=os.environ.get("SHOP_TOPIC_PREFIX", "shop"),
    )
