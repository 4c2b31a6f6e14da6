"""Inventory entities and rules. No I/O, no framework."""

from __future__ import annotations

import re
from dataclasses import dataclass

SKU_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,39}$")
MAX_RESTOCK = 1_000_000


class InventoryError(Exception):
    """A rule of inventory was broken."""


class UnknownSku(InventoryError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"No stock record for SKU {sku!r}.")


class InvalidQuantity(InventoryError):
    pass


@dataclass(frozen=True, slots=True)
class StockLevel:
    """Units of one SKU: on hand, of which some are reserved for pending orders."""

    sku: str
    on_hand: int
    reserved: int = 0

    def __post_init__(self) -> None:
        if self.on_hand < 0 or self.reserved < 0 or self.reserved > self.on_hand:
            raise InvalidQuantity(
                f"Impossible stock for {self.sku}: {self.on_hand}/{self.reserved}."
            )

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


def check_restock(quantity: int) -> int:
    """A restock adds between 1 and MAX_RESTOCK units."""
    if type(quantity) is not int or not 0 < quantity <= MAX_RESTOCK:
        raise InvalidQuantity(f"quantity must be an integer from 1 to {MAX_RESTOCK}.")
    return quantity
