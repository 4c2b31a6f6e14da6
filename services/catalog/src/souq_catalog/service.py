"""Catalog use cases: one function per command or query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from souq.events import ProductCreated, ProductPriceChanged
from souq.events.catalog import Money as EventMoney
from souq_chassis.db import Database
from souq_chassis.messaging.outbox import Outbox

from souq_catalog.domain import (
    Category,
    Money,
    NewProduct,
    Page,
    Product,
    ProductNotFound,
    UnknownCategory,
    search_terms,
)
from souq_catalog.repository import ProductRepository


class CatalogService:
    def __init__(self, db: Database, products: ProductRepository, outbox: Outbox) -> None:
        self._db = db
        self._products = products
        self._outbox = outbox

    async def list_products(
        self, *, page: int, page_size: int, category: str | None = None, query: str | None = None
    ) -> Page[Product]:
        """A page of products, optionally in one category and matching a full-text search."""
        offset = (page - 1) * page_size
        if query is not None:
            items, total = await self._products.search(
                search_terms(query), offset=offset, limit=page_size, category=category
            )
        else:
            items, total = await self._products.list(
                offset=offset, limit=page_size, category=category
            )
        return Page(items, page, page_size, total)

    async def get_product(self, product_id: int) -> Product:
        product = await self._products.get(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        return product

    async def get_product_by_sku(self, sku: str) -> Product:
        product = await self._products.get_by_sku(sku)
        if product is None:
            raise ProductNotFound(sku)
        return product

    async def get_products(self, ids: Sequence[int]) -> tuple[list[Product], list[int]]:
        """Products in the order asked, and the ids that do not exist."""
        found = {p.id: p for p in await self._products.get_many(set(ids))}
        return [found[i] for i in ids if i in found], [i for i in ids if i not in found]

    async def categories(self) -> list[Category]:
        return await self._products.categories()

    async def create_product(self, new: NewProduct) -> Product:
        """Add a product; `ProductCreated` commits with it and is published after."""
        if not await self._products.category_exists(new.category):
            raise UnknownCategory(new.category)
        async with self._db.transaction() as tx:
            product = await self._products.add(tx, new)
            await self._outbox.add(tx, _product_created(product))
        return product

    async def change_price(self, product_id: int, price: Money) -> Product:
        """Set a product's price; `ProductPriceChanged` commits with it (none if unchanged)."""
        async with self._db.transaction() as tx:
            product = await self._products.get_for_update(tx, product_id)
            if product is None:
                raise ProductNotFound(product_id)
            if product.price == price:
                return product
            changed_at, version = await self._products.set_price(tx, product_id, price)
            await self._outbox.add(tx, _price_changed(product, price, changed_at, version))
        return replace(product, price=price)

    async def import_catalog(self, cats: Sequence[Category], items: Sequence[NewProduct]) -> bool:
        """Load a catalog into an empty database; False (and nothing done) if it has products."""
        if not await self._products.is_empty():
            return False
        await self._products.add_catalog(cats, items)
        return True


def _product_created(product: Product) -> ProductCreated:
    return ProductCreated(
        product_id=product.id,
        sku=product.sku,
        name=product.name,
        category=product.category,
        price=EventMoney(amount_cents=product.price.amount_cents, currency=product.price.currency),
    )


def _price_changed(
    product: Product, price: Money, changed_at: datetime, version: int
) -> ProductPriceChanged:
    return ProductPriceChanged(
        product_id=product.id,
        sku=product.sku,
        name=product.name,
        price=EventMoney(amount_cents=price.amount_cents, currency=price.currency),
        previous_price=EventMoney(
            amount_cents=product.price.amount_cents, currency=product.price.currency
        ),
        changed_at=changed_at,
        price_version=version,
    )
