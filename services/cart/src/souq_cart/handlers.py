"""Incoming messages → use cases. Each runs in the consumer's transaction, with its inbox record."""

from __future__ import annotations

from souq.events import ProductPriceChanged
from souq_chassis.db import Transaction
from souq_chassis.messaging.consumer import Subscription
from souq_chassis.messaging.envelope import Envelope

from souq_cart.domain import Money, ProductPrice
from souq_cart.service import CartService


def subscriptions(carts: CartService) -> list[Subscription[ProductPriceChanged]]:
    async def price_changed(tx: Transaction, event: ProductPriceChanged, _: Envelope) -> None:
        price = Money(event.price.amount_cents, event.price.currency)
        product = ProductPrice(event.product_id, event.sku, event.name, price)
        await carts.price_changed(tx, product, event.changed_at, event.price_version)

    return [Subscription(ProductPriceChanged, price_changed)]
