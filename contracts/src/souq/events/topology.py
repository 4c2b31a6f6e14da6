"""Which service consumes which message types: the broker topology, declared by every service
when it connects, so a consumer's queue exists before anything it wants is published (RabbitMQ
drops what no queue is bound for; JetStream keeps it in the stream either way)."""

from __future__ import annotations

from souq.events.catalog import ProductCreated, ProductPriceChanged

SUBSCRIPTIONS: dict[str, list[str]] = {
    "inventory": [ProductCreated.type_name()],
    "cart": [ProductPriceChanged.type_name()],
}
