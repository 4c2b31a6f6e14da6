"""Souq's event and command contracts: one model per message type and version.

Publishers and consumers import the same model. A model's JSON Schema is committed under
contracts/events/; contracts/tests/test_events.py fails when a change would break a consumer
of a published version. A breaking change is a new version (a new class, `VERSION = 2`).
"""

from souq.events.base import Message, message_types
from souq.events.catalog import ProductCreated, ProductPriceChanged
from souq.events.identity import RegistrationAttempted, UserRegistered

__all__ = [
    "Message",
    "ProductCreated",
    "ProductPriceChanged",
    "RegistrationAttempted",
    "UserRegistered",
    "message_types",
]
