"""Inventory tables and queries. The database itself refuses negative quantities."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

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


def _level(row: Any) -> StockLevel:
    return StockLevel(row.sku, row.on_hand, row.reserved)


class StockRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, sku: str) -> StockLevel | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(stock).where(stock.c.sku == sku))).first()
        return _level(row) if row else None

    async def get_many(self, skus: Iterable[str]) -> dict[str, StockLevel]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(stock).where(stock.c.sku.in_(list(skus))))
        return {row.sku: _level(row) for row in rows}

    async def add_units(self, sku: str, quantity: int) -> StockLevel:
        """Add units to a SKU, creating its record on first restock."""
        now = datetime.now(UTC)
        for _ in range(2):  # a concurrent first restock may insert between our update and insert
            try:
                async with self._engine.begin() as conn:
                    updated = await conn.execute(
                        update(stock)
                        .where(stock.c.sku == sku)
                        .values(on_hand=stock.c.on_hand + quantity, updated_at=now)
                    )
                    if updated.rowcount == 0:
                        await conn.execute(
                            insert(stock).values(sku=sku, on_hand=quantity, reserved=0, updated_at=now)
                        )
                    row = (await conn.execute(select(stock).where(stock.c.sku == sku))).one()
                    return _level(row)
            except IntegrityError:
                continue
        raise RuntimeError(f"could not restock {sku}")

    async def is_empty(self) -> bool:
        async with self._engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(stock))).scalar_one() == 0

    async def add_levels(self, levels: Sequence[StockLevel]) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(stock),
                [
                    {"sku": s.sku, "on_hand": s.on_hand, "reserved": s.reserved, "updated_at": now}
                    for s in levels
                ],
            )
