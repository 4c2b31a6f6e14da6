"""Catalog tables and queries (SQLAlchemy Core on the async engine; no ORM on the hot path)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

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
    column,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

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


class ProductRepository:
    """The catalog's own tables; nobody else reads them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, product_id: int) -> Product | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(*_PRODUCT_COLUMNS).where(products.c.id == product_id))
            ).first()
        return _product(row) if row else None

    async def get_by_sku(self, sku: str) -> Product | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_PRODUCT_COLUMNS).where(products.c.sku == sku))).first()
        return _product(row) if row else None

    async def get_many(self, ids: Iterable[int]) -> list[Product]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(*_PRODUCT_COLUMNS).where(products.c.id.in_(list(ids))))
        return [_product(row) for row in rows]

    async def list(
        self, *, offset: int, limit: int, category: str | None
    ) -> tuple[list[Product], int]:
        query = select(*_PRODUCT_COLUMNS)
        count = select(func.count()).select_from(products)
        if category:
            query = query.where(products.c.category == category)
            count = count.where(products.c.category == category)
        query = query.order_by(products.c.id).offset(offset).limit(limit)
        async with self._engine.connect() as conn:
            total = (await conn.execute(count)).scalar_one()
            rows = await conn.execute(query)
            return [_product(row) for row in rows], total

    async def search(
        self, terms: Sequence[str], *, offset: int, limit: int, category: str | None
    ) -> tuple[list[Product], int]:
        matched = (
            text("SELECT rowid FROM products_fts WHERE products_fts MATCH :q")
            .bindparams(q=_fts_query(terms))
            .columns(column("rowid", Integer))
        )
        query = select(*_PRODUCT_COLUMNS).where(products.c.id.in_(matched))
        count = select(func.count()).select_from(products).where(products.c.id.in_(matched))
        if category:
            query = query.where(products.c.category == category)
            count = count.where(products.c.category == category)
        query = query.order_by(products.c.id).offset(offset).limit(limit)
        async with self._engine.connect() as conn:
            total = (await conn.execute(count)).scalar_one()
            rows = await conn.execute(query)
            return [_product(row) for row in rows], total

    async def categories(self) -> list[Category]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(categories).order_by(categories.c.name))
        return [Category(row.slug, row.name) for row in rows]

    async def category_exists(self, slug: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.execute(select(categories.c.slug).where(categories.c.slug == slug))
            return found.first() is not None

    async def add(self, new: NewProduct) -> Product:
        now = datetime.now(UTC)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    insert(products).values(
                        sku=new.sku,
                        name=new.name,
                        description=new.description,
                        category=new.category,
                        price_amount_cents=new.price.amount_cents,
                        price_currency=new.price.currency,
                        image_url=new.image_url,
                        created_at=now,
                        updated_at=now,
                    )
                )
                product_id = result.inserted_primary_key[0]
        except IntegrityError as exc:
            raise SkuAlreadyExists(new.sku) from exc
        return Product(product_id, new.sku, new.name, new.description, new.category, new.price,
                       new.image_url)

    async def set_price(self, product_id: int, price: Money) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(products)
                .where(products.c.id == product_id)
                .values(
                    price_amount_cents=price.amount_cents,
                    price_currency=price.currency,
                    updated_at=datetime.now(UTC),
                )
            )
            return result.rowcount == 1

    async def is_empty(self) -> bool:
        async with self._engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(products))).scalar_one() == 0

    async def add_catalog(self, cats: Sequence[Category], items: Sequence[NewProduct]) -> None:
        """Load a whole catalog in one transaction (demo seed)."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await conn.execute(insert(categories), [{"slug": c.slug, "name": c.name} for c in cats])
            await conn.execute(
                insert(products),
                [
                    {
                        "sku": p.sku,
                        "name": p.name,
                        "description": p.description,
                        "category": p.category,
                        "price_amount_cents": p.price.amount_cents,
                        "price_currency": p.price.currency,
                        "image_url": p.image_url,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for p in items
                ],
            )
