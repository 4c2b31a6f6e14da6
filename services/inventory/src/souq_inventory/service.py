"""Inventory use cases."""

from __future__ import annotations

from collections.abc import Sequence

from souq_chassis.db import Transaction

from souq_inventory.domain import StockLevel, UnknownSku, check_restock
from souq_inventory.repository import StockRepository


class InventoryService:
    def __init__(self, stock: StockRepository) -> None:
        self._stock = stock

    async def availability(self, skus: Sequence[str]) -> dict[str, StockLevel]:
        """Stock of the SKUs that have a record; the others are simply absent."""
        return await self._stock.get_many(set(skus))

    async def stock_of(self, sku: str) -> StockLevel:
        level = await self._stock.get(sku)
        if level is None:
            raise UnknownSku(sku)
        return level

    async def start_tracking(self, tx: Transaction, sku: str) -> bool:
        """A new product's SKU gets a stock record (zero units) unless it has one."""
        return await self._stock.track(tx, sku)

    async def restock(self, sku: str, quantity: int) -> StockLevel:
        return await self._stock.add_units(sku, check_restock(quantity))

    async def import_stock(self, levels: Sequence[StockLevel]) -> bool:
        """Load stock into an empty database; False (and nothing done) if it has records."""
        if not await self._stock.is_empty():
            return False
        await self._stock.add_levels(levels)
        return True
