"""Cart entities and rules. No I/O, no framework."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_QUANTITY = 99  # units of one product in a cart, unless configured otherwise
MAX_LINES = 50  # distinct products in a cart, unless configured otherwise
QUANTITY_CEILING = 999  # no configuration goes above this; the database refuses more


class CartError(Exception):
    """A rule of the cart was broken."""


class InvalidQuantity(CartError):
    """A quantity outside 1..max_quantity, asked for or reached by adding."""


class TooManyLines(CartError):
    def __init__(self, max_lines: int) -> None:
        super().__init__(f"A cart holds at most {max_lines} different products.")


class UnknownProduct(CartError):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"No product {product_id} in the catalog.")
        self.product_id = product_id


class ItemNotInCart(CartError):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"Product {product_id} is not in the cart.")
        self.product_id = product_id


class PricesUnavailable(CartError):
    """Catalog did not answer, and the cart has no price of its own to show instead."""

    def __init__(self, reason: str = "") -> None:
        detail = "Prices are unavailable right now; try again shortly."
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Money:
    """Integer minor units and an ISO 4217 code: never a float."""

    amount_cents: int
    currency: str

    def times(self, quantity: int) -> Money:
        return Money(self.amount_cents * quantity, self.currency)


@dataclass(frozen=True, slots=True)
class ProductPrice:
    """A product as the cart shows it: its name and price as catalog last said."""

    product_id: int
    sku: str
    name: str
    unit_price: Money


@dataclass(frozen=True, slots=True)
class CartLine:
    product: ProductPrice
    quantity: int

    @property
    def line_total(self) -> Money:
        return self.product.unit_price.times(self.quantity)


@dataclass(frozen=True, slots=True)
class Cart:
    """One user's cart, priced: lines in the order their products were first added."""

    lines: tuple[CartLine, ...] = ()

    @property
    def totals(self) -> list[Money]:
        """One total per currency, by currency code; none for an empty cart."""
        return totals_of(line.line_total for line in self.lines)

    @property
    def item_count(self) -> int:
        """Units in the cart, all products together."""
        return sum(line.quantity for line in self.lines)


def totals_of(amounts: Iterable[Money]) -> list[Money]:
    """Sum amounts per currency; amounts of different currencies are never added together."""
    sums: dict[str, int] = {}
    for amount in amounts:
        sums[amount.currency] = sums.get(amount.currency, 0) + amount.amount_cents
    return [Money(sums[currency], currency) for currency in sorted(sums)]


@dataclass(frozen=True, slots=True)
class CartLimits:
    """How much one cart may hold."""

    max_quantity: int = MAX_QUANTITY
    max_lines: int = MAX_LINES

    def __post_init__(self) -> None:
        if not 1 <= self.max_quantity <= QUANTITY_CEILING:
            raise ValueError(f"max_quantity must be from 1 to {QUANTITY_CEILING}.")
        if self.max_lines < 1:
            raise ValueError("max_lines must be at least 1.")

    def check_quantity(self, quantity: int) -> int:
        """A line holds from 1 to max_quantity units."""
        if type(quantity) is not int or not 1 <= quantity <= self.max_quantity:
            raise InvalidQuantity(f"quantity must be an integer from 1 to {self.max_quantity}.")
        return quantity

    def quantity_after_adding(self, current: int | None, added: int, lines: int) -> int:
        """The line's quantity once `added` units are put in a cart of `lines` products that
        holds `current` units of this one (None: not in the cart yet)."""
        self.check_quantity(added)
        if current is None:
            if lines >= self.max_lines:
                raise TooManyLines(self.max_lines)
            return added
        total = current + added
        if total > self.max_quantity:
            raise InvalidQuantity(
                f"The cart holds {current} of this product; adding {added} would make "
                f"{total}, more than {self.max_quantity}."
            )
        return total
