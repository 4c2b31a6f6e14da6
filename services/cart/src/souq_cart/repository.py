"""Cart tables and queries: the lines of every cart and the cart's own copy of their prices.

Upserts are written once in SQL that SQLite and PostgreSQL both speak (`ON CONFLICT`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from souq_chassis.db import Database, Transaction
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)

from souq_cart.domain import QUANTITY_CEILING, Money, ProductPrice

metadata = MetaData()

cart_items = Table(
    "cart_items",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("product_id", BigInteger, primary_key=True, autoincrement=False),
    Column("quantity", Integer, nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        f"quantity >= 1 AND quantity <= {QUANTITY_CEILING}", name="ck_cart_items_quantity"
    ),
)

product_prices = Table(
    "product_prices",
    metadata,
    Column("product_id", BigInteger, primary_key=True, autoincrement=False),  # catalog's id
    Column("sku", String(40), nullable=False),
    Column("name", String(200), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    # catalog's price version, when the price came from an event that carries one.
    Column("price_version", BigInteger, nullable=True),
    CheckConstraint("amount_cents > 0", name="ck_product_prices_amount_positive"),
)

_AT = DateTime(timezone=True)

# Statements are built once: building a select() costs more than running it.
# The read path: a cart's lines with their cached prices, and whether each price is fresh.
_CART = (
    select(
        cart_items.c.product_id,
        cart_items.c.quantity,
        product_prices.c.sku,
        product_prices.c.name,
        product_prices.c.amount_cents,
        product_prices.c.currency,
        (product_prices.c.as_of >= bindparam("fresh_since", type_=_AT)).label("fresh"),
    )
    .select_from(
        cart_items.outerjoin(product_prices, product_prices.c.product_id == cart_items.c.product_id)
    )
    .where(cart_items.c.user_id == bindparam("user_id"))
    .order_by(cart_items.c.added_at, cart_items.c.product_id)
)
_LINE_AND_COUNT = select(
    select(cart_items.c.quantity)
    .where(
        cart_items.c.user_id == bindparam("user_id"),
        cart_items.c.product_id == bindparam("product_id"),
    )
    .scalar_subquery(),
    select(func.count())
    .select_from(cart_items)
    .where(cart_items.c.user_id == bindparam("user_id"))
    .scalar_subquery(),
)
# Adds to a line atomically; the WHERE keeps a concurrent add from passing the maximum.
_ADD = text(
    "INSERT INTO cart_items (user_id, product_id, quantity, added_at) "
    "VALUES (:user_id, :product_id, :quantity, :added_at) "
    "ON CONFLICT (user_id, product_id) DO UPDATE "
    "SET quantity = cart_items.quantity + excluded.quantity "
    "WHERE cart_items.quantity + excluded.quantity <= :max_quantity"
).bindparams(bindparam("added_at", type_=_AT))
_SET_QUANTITY = (
    update(cart_items)
    .where(
        cart_items.c.user_id == bindparam("owner"),
        cart_items.c.product_id == bindparam("item"),
    )
    .values(quantity=bindparam("quantity"))
)
_REMOVE = delete(cart_items).where(
    cart_items.c.user_id == bindparam("user_id"),
    cart_items.c.product_id == bindparam("product_id"),
)
_CLEAR = delete(cart_items).where(cart_items.c.user_id == bindparam("user_id"))
# A price replaces the cached one only if it is newer: events may arrive out of order. Newer
# by catalog's price version when both have one (a sequence, not a clock); else by when it was
# known (the cart's own clock for a price it asked catalog for, which carries no version).
_SAVE_PRICE = text(
    "INSERT INTO product_prices "
    "(product_id, sku, name, amount_cents, currency, as_of, price_version) "
    "VALUES (:product_id, :sku, :name, :amount_cents, :currency, :as_of, :price_version) "
    "ON CONFLICT (product_id) DO UPDATE SET "
    "sku = excluded.sku, name = excluded.name, amount_cents = excluded.amount_cents, "
    "currency = excluded.currency, as_of = excluded.as_of, "
    "price_version = excluded.price_version "
    "WHERE CASE WHEN excluded.price_version IS NOT NULL "
    "AND product_prices.price_version IS NOT NULL "
    "THEN excluded.price_version > product_prices.price_version "
    "ELSE excluded.as_of > product_prices.as_of END"
).bindparams(bindparam("as_of", type_=_AT))


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A cart line as stored: its cached price (None if there is none) and whether that price
    is younger than the freshness limit."""

    product_id: int
    quantity: int
    price: ProductPrice | None
    fresh: bool


def _utc(moment: datetime) -> datetime:
    # SQLite stores the wall-clock digits only, so every stored time must be UTC to compare.
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stored(
    product_id: int,
    quantity: int,
    sku: str | None,
    name: str,
    amount_cents: int,
    currency: str,
    fresh: bool | None,
) -> StoredLine:
    if sku is None:  # no cached price
        return StoredLine(product_id, quantity, None, False)
    price = ProductPrice(product_id, sku, name, Money(amount_cents, currency))
    return StoredLine(product_id, quantity, price, bool(fresh))


def _rowcount(result: object) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]


class CartRepository:
    """The cart's own tables; nobody else reads them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lines(self, user_id: str, fresh_since: datetime) -> list[StoredLine]:
        """One query: the user's lines with their cached prices."""
        rows = await self._db.all(_CART, {"user_id": user_id, "fresh_since": _utc(fresh_since)})
        return [_stored(*row) for row in rows]

    async def line_and_count(
        self, tx: Transaction, user_id: str, product_id: int
    ) -> tuple[int | None, int]:
        """The quantity of one product in the cart (None if absent) and the cart's lines."""
        row = await tx.one(_LINE_AND_COUNT, {"user_id": user_id, "product_id": product_id})
        assert row is not None
        return row[0], row[1]

    async def add(
        self,
        tx: Transaction,
        user_id: str,
        product_id: int,
        quantity: int,
        *,
        max_quantity: int,
        now: datetime,
    ) -> bool:
        """Put units of a product in the cart; False if the line would pass max_quantity."""
        result = await tx.execute(
            _ADD,
            {
                "user_id": user_id,
                "product_id": product_id,
                "quantity": quantity,
                "added_at": _utc(now),
                "max_quantity": max_quantity,
            },
        )
        return _rowcount(result) == 1

    async def set_quantity(self, user_id: str, product_id: int, quantity: int) -> bool:
        """False if the product is not in the user's cart."""
        async with self._db.transaction() as tx:
            result = await tx.execute(
                _SET_QUANTITY, {"owner": user_id, "item": product_id, "quantity": quantity}
            )
            return _rowcount(result) == 1

    async def remove(self, user_id: str, product_id: int) -> bool:
        """False if the product is not in the user's cart."""
        async with self._db.transaction() as tx:
            result = await tx.execute(_REMOVE, {"user_id": user_id, "product_id": product_id})
            return _rowcount(result) == 1

    async def clear(self, user_id: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(_CLEAR, {"user_id": user_id})

    async def save_prices(
        self,
        tx: Transaction,
        prices: Iterable[ProductPrice],
        as_of: datetime,
        version: int | None = None,
    ) -> None:
        """Cache prices known as of a moment (and at a catalog price version, if known); a
        cached price that is newer stays."""
        at = _utc(as_of)
        rows = [
            {
                "product_id": p.product_id,
                "sku": p.sku,
                "name": p.name,
                "amount_cents": p.unit_price.amount_cents,
                "currency": p.unit_price.currency,
                "as_of": at,
                "price_version": version,
            }
            for p in prices
        ]
        if rows:
            await tx.execute(_SAVE_PRICE, rows)
