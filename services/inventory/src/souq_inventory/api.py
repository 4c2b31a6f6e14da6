"""Inventory HTTP routes, for administrators only: stock lookups and the restock.

Shoppers see availability through the gateway (gRPC `GetAvailability`), never the stock.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from souq_chassis.auth import current_admin
from souq_chassis.problems import problem, request_id_of

from souq_inventory.domain import (
    MAX_RESTOCK,
    SKU_PATTERN,
    InventoryError,
    StockLevel,
    UnknownSku,
)
from souq_inventory.service import InventoryService

Sku = Annotated[str, Path(pattern=SKU_PATTERN.pattern, description="Stock keeping unit")]


class StockBody(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int

    @classmethod
    def of(cls, level: StockLevel) -> StockBody:
        return cls(
            sku=level.sku, on_hand=level.on_hand, reserved=level.reserved, available=level.available
        )


class RestockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: StrictInt = Field(gt=0, le=MAX_RESTOCK)


def include(app: FastAPI, inventory: InventoryService) -> None:
    # Stock levels are business data: reading them needs the admin role too.
    stock = APIRouter(prefix="/v1", tags=["inventory"], dependencies=[Depends(current_admin)])
    admin = APIRouter(
        prefix="/v1/admin", tags=["inventory admin"], dependencies=[Depends(current_admin)]
    )

    @stock.get("/stock/{sku}")
    async def get_stock(sku: Sku) -> StockBody:
        return StockBody.of(await inventory.stock_of(sku))

    @admin.post("/stock/{sku}/restock")
    async def restock(sku: Sku, body: RestockBody) -> StockBody:
        return StockBody.of(await inventory.restock(sku, body.quantity))

    app.include_router(stock)
    app.include_router(admin)

    async def inventory_error(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, UnknownSku) else 422
        return problem(status, str(exc), request_id=request_id_of(request))

    app.add_exception_handler(InventoryError, inventory_error)
