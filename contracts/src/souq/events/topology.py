"""Which service consumes which message types: the broker topology, declared by the
administrator (`souq up` on its NATS) or, where it may, by every service when it connects, so
a consumer's queue exists before anything it wants is published (RabbitMQ drops what no queue
is bound for; JetStream keeps it in the stream either way)."""

from __future__ import annotations

from souq.events.catalog import ProductCreated, ProductPriceChanged

SUBSCRIPTIONS: dict[str, list[str]] = {
    "inventory": [ProductCreated.type_name()],
    "cart": [ProductPriceChanged.type_name()],
}


def publications() -> dict[str, list[str]]:
    """The types each service publishes: a type's first name is its publisher's
    (`catalog.ProductCreated.v1` is catalog's)."""
    from souq.events.base import message_types

    found: dict[str, list[str]] = {}
    for name in sorted(message_types()):
        found.setdefault(name.split(".", 1)[0], []).append(name)
    return found
