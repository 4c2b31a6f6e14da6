"""Catalog tables and queries (SQLAlchemy Core on the async engine; no ORM on the hot path)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from souq_chassis.db import Database, Transaction
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    column,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from souq_catalog.domain import Category, Money, NewProduct, Product, SkuAlreadyExists

metadata = MetaData()

categories = Table(
    "categories",
    metadata,
    Column("slug", String(40), primary_key=True),
    Column("name", String(120), nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(40), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("category", String(40), ForeignKey("categories.slug"), nullable=False, index=True),
    Column("price_amount_cents", BigInteger, nullable=False),
    Column("price_currency", String(3), nullable=False),
    Column("image_url", String(500), nullable=False, server_default=""),
    # Counts the product's price changes: consumers order its price events by it, not by clocks.
    Column("price_version", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("price_amount_cents > 0", name="ck_products_price_positive"),
)

_PRODUCT_COLUMNS = (
    products.c.id,
    products.c.sku,
    products.c.name,
    products.c.description,
    products.c.category,
    products.c.price_amount_cents,
    products.c.price_currency,
    products.c.image_url,
)


# Statements are built once: building a select() costs more than running it.
_SELECT_PRODUCTS = select(*_PRODUCT_COLUMNS)
_BY_ID = _SELECT_PRODUCTS.where(products.c.id == bindparam("id"))
_BY_ID_FOR_UPDATE = _BY_ID.with_for_update()  # a row lock on PostgreSQL; SQLite serializes
_BY_SKU = _SELECT_PRODUCTS.where(products.c.sku == bindparam("sku"))
_BY_IDS = _SELECT_PRODUCTS.where(products.c.id.in_(bindparam("ids", expanding=True)))
_CATEGORIES = select(categories).order_by(categories.c.name)
_CATEGORY_EXISTS = select(categories.c.slug).where(categories.c.slug == bindparam("slug"))
_COUNT_PRODUCTS = select(func.count()).select_from(products)
_INSERT_PRODUCT = insert(products)
_SET_PRICE = (
    update(products)
    .where(products.c.id == bindparam("product_id"))
    .values(
        price_amount_cents=bindparam("amount_cents"),
        price_currency=bindparam("currency"),
        price_version=products.c.price_version + 1,
        updated_at=bindparam("now"),
    )
    .returning(products.c.price_version)
)
_FTS_MATCH = text("SELECT rowid FROM products_fts WHERE products_fts MATCH :q").columns(
    column("rowid", Integer)
)


def _product(row: Any) -> Product:
    return Product(
        id=row.id,
        sku=row.sku,
        name=row.name,
        description=row.description,
        category=row.category,
        price=Money(row.price_amount_cents, row.price_currency),
        image_url=row.image_url,
    )


def _fts_query(terms: Sequence[str]) -> str:
    # Each term quoted (so FTS5 syntax in user text is inert) and prefix-matched; all must match.
    return " ".join('"' + term.replace('"', '""') + '"*' for term in terms)


def _row_of(new: NewProduct, now: datetime) -> dict[str, Any]:
    return {
        "sku": new.sku,
        "name": new.name,
        "description": new.description,
        "category": new.category,
        "price_amount_cents": new.price.amount_cents,
        "price_currency": new.price.currency,
        "image_url": new.image_url,
        "created_at": now,
        "updated_at": now,
    }


class ProductRepository:
    """The catalog's own tables; nobody else reads them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, product_id: int) -> Product | None:
        row = await self._db.one(_BY_ID, {"id": product_id})
        return _product(row) if row else None

    async def get_by_sku(self, sku: str) -> Product | None:
        row = await self._db.one(_BY_SKU, {"sku": sku})
        return _product(row) if row else None

    async def get_many(self, ids: Iterable[int]) -> list[Product]:
        return [_product(row) for row in await self._db.all(_BY_IDS, {"ids": list(ids)})]

    async def list(
        self, *, offset: int, limit: int, category: str | None
    ) -> tuple[list[Product], int]:
        return await self._page(None, offset=offset, limit=limit, category=category)

    async def search(
        self, terms: Sequence[str], *, offset: int, limit: int, category: str | None
    ) -> tuple[list[Product], int]:
        return await self._page(_fts_query(terms), offset=offset, limit=limit, category=category)

    async def _page(
        self, match: str | None, *, offset: int, limit: int, category: str | None
    ) -> tuple[list[Product], int]:
        query, count = _SELECT_PRODUCTS, _COUNT_PRODUCTS
        params: dict[str, Any] = {}
        if match is not None:
            matched = products.c.id.in_(_FTS_MATCH)
            query, count = query.where(matched), count.where(matched)
            params["q"] = match
        if category:
            query = query.where(products.c.category == category)
            count = count.where(products.c.category == category)
        query = query.order_by(products.c.id).offset(offset).limit(limit)
        total = await self._db.scalar(count, params)
        rows = await self._db.all(query, params)
        return [_product(row) for row in rows], total

    async def categories(self) -> list[Category]:
        return [Category(row.slug, row.name) for row in await self._db.all(_CATEGORIES)]

    async def category_exists(self, slug: str) -> bool:
        return await self._db.one(_CATEGORY_EXISTS, {"slug": slug}) is not None

    async def add(self, tx: Transaction, new: NewProduct) -> Product:
        """Insert a product in the caller's transaction (which also records its event)."""
        try:
            result = await tx.execute(_INSERT_PRODUCT, _row_of(new, datetime.now(UTC)))
        except IntegrityError as exc:
            raise SkuAlreadyExists(new.sku) from exc
        product_id = result.inserted_primary_key[0]  # type: ignore[attr-defined]
        return Product(
            product_id, new.sku, new.name, new.description, new.category, new.price, new.image_url
        )

    async def get_for_update(self, tx: Transaction, product_id: int) -> Product | None:
        """The product, locked in the caller's (write) transaction until it commits."""
        row = await tx.one(_BY_ID_FOR_UPDATE, {"id": product_id})
        return _product(row) if row else None

    async def set_price(
        self, tx: Transaction, product_id: int, price: Money
    ) -> tuple[datetime, int]:
        """Change the price in the caller's transaction (which also records its event); when,
        and the product's price version, one more than before."""
        now = datetime.now(UTC)
        version = await tx.scalar(
            _SET_PRICE,
            {
                "product_id": product_id,
                "amount_cents": price.amount_cents,
                "currency": price.currency,
                "now": now,
            },
        )
        return now, int(version)

    async def is_empty(self) -> bool:
        return await self._db.scalar(_COUNT_PRODUCTS) == 0

    async def add_catalog(self, cats: Sequence[Category], items: Sequence[NewProduct]) -> None:
        """Load a whole catalog in one transaction (demo seed)."""
        now = datetime.now(UTC)
        async with self._db.transaction() as tx:
            await tx.execute(insert(categories), [{"slug": c.slug, "name": c.name} for c in cats])
            await tx.execute(_INSERT_PRODUCT, [_row_of(p, now) for p in items])
