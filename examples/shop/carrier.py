"""The carrier service: books a parcel for a paid order; it cannot deliver to some
countries, and then keeps failing until the workflow gets the failure event and refunds.

    python -m examples.shop.carrier      # KAFKA_BOOTSTRAP_SERVERS, SHOP_TOPIC_PREFIX
"""

from __future__ import annotations

import logging
import os

from conveyor_client.handlers import Command, Handlers, Reply

UNSERVED = frozenset({"AQ"})
"""Countries no carrier goes to."""

handlers = Handlers(service="shop-carrier", initial_backoff=0.05, max_backoff=0.2)


class NoCarrier(Exception):
    """No carrier serves the address."""


@handlers.command("carrier.booking_requested", attempts=3)
async def book(command: Command) -> Reply:
    country = str(command.data["address"]["country"])
    if country in UNSERVED:
        raise NoCarrier(f"no carrier delivers to {country}")
    return Reply("carrier.booked", {"tracking_number": f"TRK-{command.id[:8]}"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s carrier %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    handlers.run(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topic_prefix=os.environ.get("SHOP_TOPIC_PREFIX", "shop"),
    )
