"""What the storefront shows about stock. No I/O, no framework."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

LOW_STOCK_THRESHOLD = 5


class Availability(StrEnum):
    IN_STOCK = "in_stock"
    LOW_STOCK = "low_stock"
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN = "unknown"  # inventory did not answer in time


@dataclass(frozen=True, slots=True)
class Stock:
    """Inventory's answer for one SKU."""

    available: int
    tracked: bool

    @property
    def availability(self) -> Availability:
        if not self.tracked or self.available <= 0:
            return Availability.OUT_OF_STOCK
        if self.available <= LOW_STOCK_THRESHOLD:
            return Availability.LOW_STOCK
        return Availability.IN_STOCK


def availability_of(stock: Stock | None) -> tuple[Availability, int | None]:
    """The label and the sellable quantity; both unknown when inventory gave no answer."""
    if stock is None:
        return Availability.UNKNOWN, None
    return stock.availability, max(stock.available, 0) if stock.tracked else 0
