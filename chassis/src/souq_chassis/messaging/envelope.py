"""What travels on the broker: a message model wrapped with id, time, causality and trace."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.propagate import inject
from pydantic import BaseModel, ConfigDict
from souq.events import Message


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: str  # `<service>.<Name>.v<version>`, e.g. catalog.ProductCreated.v1
    version: int
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None = None
    trace: dict[str, str] = {}  # W3C traceparent / tracestate of the publishing span
    data: dict[str, Any]


def new_id() -> str:
    return os.urandom(16).hex()


def wrap(message: Message, *, cause: Envelope | None = None) -> Envelope:
    """An envelope for a new message; `cause` is the message being handled, if any."""
    carrier: dict[str, str] = {}
    inject(carrier)
    message_id = new_id()
    return Envelope(
        id=message_id,
        type=message.type_name(),
        version=message.VERSION,
        occurred_at=datetime.now(UTC),
        correlation_id=cause.correlation_id if cause else message_id,
        causation_id=cause.id if cause else None,
        trace=carrier,
        data=message.model_dump(mode="json"),
    )


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def decode(body: bytes) -> Envelope:
    """The envelope in a message body; raises pydantic.ValidationError if it is not one."""
    return Envelope.model_validate_json(body)
