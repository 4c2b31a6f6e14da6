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


class RateLimiter:
    """Token buckets by key (a client IP, a user id): `rate_per_s` tokens refill each second up
    to `burst`; a request takes one. At most `max_keys` buckets are kept: when full, the oldest
    is forgotten (a forgotten client starts again with a full bucket)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """Take a token: 0.0 if the request may go on, else the seconds until one is free."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            wait, tokens = 0.0, tokens - 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        if len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)  # re-inserted: the dict is oldest-first
        return wait
