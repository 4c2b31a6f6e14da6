"""Inventory tables and queries. The database itself refuses negative quantities."""

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
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)

from souq_inventory.domain import StockLevel

metadata = MetaData()

stock = Table(
    "stock",
    metadata,
    Column("sku", String(40), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_not_negative"),
    CheckConstraint("reserved >= 0", name="ck_stock_reserved_not_negative"),
    CheckConstraint("reserved <= on_hand", name="ck_stock_reserved_within_on_hand"),
)


_BY_SKU = select(stock).where(stock.c.sku == bindparam("sku"))
_BY_SKUS = select(stock).where(stock.c.sku.in_(bindparam("skus", expanding=True)))
_ADD_UNITS = (
    update(stock)
    .where(stock.c.sku == bindparam("target_sku"))
    .values(on_hand=stock.c.on_hand + bindparam("quantity"), updated_at=bindparam("now"))
)
_INSERT = insert(stock)
_COUNT = select(func.count()).select_from(stock)


def _level(row: Any) -> StockLevel:
    return StockLevel(row.sku, row.on_hand, row.reserved)


class StockRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, sku: str) -> StockLevel | None:
        row = await self._db.one(_BY_SKU, {"sku": sku})
        return _level(row) if row else None

    async def get_many(self, skus: Iterable[str]) -> dict[str, StockLevel]:
        rows = await self._db.all(_BY_SKUS, {"skus": list(skus)})
        return {row.sku: _level(row) for row in rows}

    async def add_units(self, sku: str, quantity: int) -> StockLevel:
        """Add units to a SKU, creating its record on first restock."""
        now = datetime.now(UTC)
        async with self._db.transaction() as tx:
            updated = await tx.execute(
                _ADD_UNITS, {"target_sku": sku, "quantity": quantity, "now": now}
            )
            if updated.rowcount == 0:  # type: ignore[attr-defined]
                await tx.execute(
                    _INSERT, {"sku": sku, "on_hand": quantity, "reserved": 0, "updated_at": now}
                )
            row = await tx.one(_BY_SKU, {"sku": sku})
        assert row is not None
        return _level(row)

    async def track(self, tx: Transaction, sku: str) -> bool:
        """Start a stock record of zero units for a SKU; False if it has one already."""
        if await tx.one(_BY_SKU, {"sku": sku}) is not None:
            return False
        now = datetime.now(UTC)
        await tx.execute(_INSERT, {"sku": sku, "on_hand": 0, "reserved": 0, "updated_at": now})
        return True

    async def is_empty(self) -> bool:
        return await self._db.scalar(_COUNT) == 0

    async def add_levels(self, levels: Sequence[StockLevel]) -> None:
        now = datetime.now(UTC)
        async with self._db.transaction() as tx:
            await tx.execute(
                _INSERT,
                [
                    {"sku": s.sku, "on_hand": s.on_hand, "reserved": s.reserved, "updated_at": now}
                    for s in levels
                ],
            )
