import asyncio
import os
import uuid

from conveyor_client import AsyncConveyor, NotFound


async def main() -> None:
    url, key = os.environ["CONVEYOR_URL"], os.environ["CONVEYOR_API_KEY"]
    async with AsyncConveyor(url, key) as conveyor:
        order_id = f"o-{uuid.uuid4().hex[:8]}"
        data = {
            "order_id": order_id,
            "customer_id": "c-42",
            "currency": "EUR",
            "items": [{"sku": "book", "quantity": 2, "unit_price": "10"}],
            "total": "20",
        }
        # Sent with an Idempotency-Key: a start retried after a lost answer is the same.
        order = await conveyor.start("order", order_id, data)
        # Each event carries an id (made here unless given): a retry is a duplicate.
        await conveyor.send(order.id, "payment.initiated", {"payment_id": "p-1", "provider": "psp"})
        paid = await conveyor.send(
            order.id, "payment.captured", {"payment_id": "p-1", "amount": "20", "currency": "EUR"}
        )
        print(f"{order_id} is {paid.instance.state}")

        async for entry in conveyor.history(order.id):
            print(f"  {entry.revision} {entry.event_type}: {entry.from_state} -> {entry.to_state}")

        paid_orders = conveyor.instances(
            workflow="order", state="paid", data={"customer_id": "c-42"}
        )
        async for instance in paid_orders:  # every page, following the cursors
            print(f"paid: {instance.business_key} since {instance.state_entered_at:%H:%M}")

        try:
            await conveyor.find("order", "no-such-order")
        except NotFound as error:
            print(f"not found ({error.status}): {error.detail}")


if __name__ == "__main__":
    asyncio.run(main())
