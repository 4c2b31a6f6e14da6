"""Cart use cases: one function per command or query. The cart is always the caller's own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from souq_chassis.db import Database, Transaction

from souq_cart.domain import (
    Cart,
    CartLimits,
    CartLine,
    InvalidQuantity,
    ItemNotInCart,
    PricesUnavailable,
    ProductPrice,
    UnknownProduct,
)
from souq_cart.pricing import CatalogPricing
from souq_cart.repository import CartRepository

log = structlog.get_logger("souq.cart")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class CartService:
    def __init__(
        self,
        db: Database,
        carts: CartRepository,
        pricing: CatalogPricing,
        limits: CartLimits,
        *,
        price_ttl_s: float,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._carts = carts
        self._pricing = pricing
        self._limits = limits
        self._price_ttl = timedelta(seconds=price_ttl_s)
        self._clock = clock

    async def cart_of(self, user_id: str) -> Cart:
        """The user's cart, priced from the cart's copy of catalog's prices: copies older than
        the TTL are fetched again (one call); if catalog is down, old copies serve."""
        stored = await self._carts.lines(user_id, self._clock() - self._price_ttl)
        stale = [line.product_id for line in stored if not line.fresh]
        fetched = await self._refreshed(stale) if stale else {}
        known = fetched or {}
        lines: list[CartLine] = []
        unpriced: list[int] = []
        for line in stored:
            price = known.get(line.product_id) or line.price
            if price is None:
                unpriced.append(line.product_id)
            else:
                lines.append(CartLine(price, line.quantity))
        if unpriced:
            if fetched is None:
                raise PricesUnavailable(f"no price known for products {unpriced}")
            # Catalog answered and no longer knows them: nothing to sell, nothing to show.
            log.warning("cart_products_gone", product_ids=unpriced)
        return Cart(tuple(lines))

    async def _refreshed(self, product_ids: Sequence[int]) -> dict[int, ProductPrice] | None:
        """Catalog's prices of these products, now cached; None if catalog did not answer."""
        asked_at = self._clock()
        try:
            found, _ = await self._pricing.prices(product_ids)
        except PricesUnavailable as exc:
            log.warning("prices_stale", product_ids=list(product_ids), reason=exc.reason)
            return None
        if found:
            async with self._db.transaction() as tx:
                await self._carts.save_prices(tx, found.values(), asked_at)
        return found

    async def add_item(self, user_id: str, product_id: int, quantity: int) -> Cart:
        """Put units of a product in the cart, adding to its line if it has one. Catalog is
        always asked: an unknown product is refused, a known one's price is cached."""
        limits = self._limits
        limits.check_quantity(quantity)
        asked_at = self._clock()
        found, _ = await self._pricing.prices([product_id])
        price = found.get(product_id)
        if price is None:
            raise UnknownProduct(product_id)
        async with self._db.transaction() as tx:
            await self._carts.save_prices(tx, [price], asked_at)
            current, lines = await self._carts.line_and_count(tx, user_id, product_id)
            limits.quantity_after_adding(current, quantity, lines)  # refuses what breaks a rule
            added = await self._carts.add(
                tx,
                user_id,
                product_id,
                quantity,
                max_quantity=limits.max_quantity,
                now=self._clock(),
            )
            if not added:  # a concurrent add got there first
                raise InvalidQuantity(f"quantity must stay at most {limits.max_quantity}.")
        return await self.cart_of(user_id)

    async def change_quantity(self, user_id: str, product_id: int, quantity: int) -> Cart:
        """Set how many units of a product in the cart the user wants."""
        self._limits.check_quantity(quantity)
        if not await self._carts.set_quantity(user_id, product_id, quantity):
            raise ItemNotInCart(product_id)
        return await self.cart_of(user_id)

    async def remove_item(self, user_id: str, product_id: int) -> None:
        if not await self._carts.remove(user_id, product_id):
            raise ItemNotInCart(product_id)

    async def clear(self, user_id: str) -> None:
        await self._carts.clear(user_id)

    async def price_changed(
        self,
        tx: Transaction,
        price: ProductPrice,
        changed_at: datetime,
        version: int | None = None,
    ) -> None:
        """Catalog changed a price: cache it, unless a newer one is cached already (by catalog's
        price version when the event has one)."""
        await self._carts.save_prices(tx, [price], changed_at, version)
