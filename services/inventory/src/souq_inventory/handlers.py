"""Incoming messages → use cases. Each runs in the consumer's transaction, with its inbox record."""

from __future__ import annotations

from souq.events import ProductCreated
from souq_chassis.db import Transaction
from souq_chassis.messaging.consumer import Subscription
from souq_chassis.messaging.envelope import Envelope

from souq_inventory.service import InventoryService


def subscriptions(inventory: InventoryService) -> list[Subscription[ProductCreated]]:
    async def product_created(tx: Transaction, event: ProductCreated, _: Envelope) -> None:
        await inventory.start_tracking(tx, event.sku)

    return [Subscription(ProductCreated, product_created)]
