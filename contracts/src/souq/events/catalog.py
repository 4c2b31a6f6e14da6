"""Events published by catalog."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from souq.events.base import Message


class Money(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    amount_cents: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class ProductCreated(Message):
    """A product was added to the catalog; inventory starts tracking its SKU."""

    TYPE: ClassVar[str] = "catalog.ProductCreated"
    VERSION: ClassVar[int] = 1

    product_id: int
    sku: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    name: str
    category: str
    price: Money


class ProductPriceChanged(Message):
    """A product's price changed; whoever keeps a copy of it (cart) updates it."""

    TYPE: ClassVar[str] = "catalog.ProductPriceChanged"
    VERSION: ClassVar[int] = 1

    product_id: int
    sku: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")
    name: str
    price: Money
    previous_price: Money
    changed_at: datetime
    # The product's price version at catalog, one more at each change: the order of its price
    # events (newest wins), where clocks cannot be trusted to order them. None from publishers
    # that predate it.
    price_version: int | None = Field(default=None, ge=1, le=2**53)  # exact in every JSON
