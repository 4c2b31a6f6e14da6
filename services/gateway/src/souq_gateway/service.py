"""Storefront use cases: join catalog and inventory, and degrade when inventory is away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from souq_chassis.resilience import UpstreamUnavailable

from souq_gateway.domain import Availability, Stock, availability_of
from souq_gateway.upstreams import (
    CatalogCategory,
    CatalogClient,
    CatalogProduct,
    InventoryClient,
)

log = structlog.get_logger("gateway")


class ProductNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ProductView:
    product: CatalogProduct
    availability: Availability
    available_quantity: int | None


@dataclass(frozen=True, slots=True)
class ProductListView:
    items: list[ProductView]
    page: int
    page_size: int
    total: int


class Storefront:
    def __init__(self, catalog: CatalogClient, inventory: InventoryClient) -> None:
        self._catalog = catalog
        self._inventory = inventory

    async def product(self, product_id: int) -> ProductView:
        """One product with its availability; availability is `unknown` if inventory is away."""
        product = await self._catalog.product(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        stock = await self._stock([product.sku])
        return _view(product, stock)

    async def products(
        self, *, page: int, page_size: int, category: str | None, query: str | None
    ) -> ProductListView:
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        if category:
            params["category"] = category
        if query:
            params["q"] = query
        listing = await self._catalog.products(params)
        stock = await self._stock([p.sku for p in listing.items]) if listing.items else {}
        return ProductListView(
            items=[_view(p, stock) for p in listing.items],
            page=listing.page,
            page_size=listing.page_size,
            total=listing.total,
        )

    async def categories(self) -> list[CatalogCategory]:
        return await self._catalog.categories()

    async def _stock(self, skus: Sequence[str]) -> dict[str, Stock] | None:
        try:
            return await self._inventory.stock(skus)
        except UpstreamUnavailable as exc:
            log.warning("inventory_unavailable", reason=exc.reason)
            return None


def _view(product: CatalogProduct, stock: dict[str, Stock] | None) -> ProductView:
    label, quantity = availability_of(None if stock is None else stock.get(product.sku))
    return ProductView(product, label, quantity)
