"""Inventory gRPC servicer."""

from __future__ import annotations

import grpc
from souq.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from souq_inventory.service import InventoryService

MAX_SKUS = 500


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, inventory: InventoryService) -> None:
        self._inventory = inventory

    async def GetAvailability(
        self, request: inventory_pb2.GetAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.GetAvailabilityResponse:
        if len(request.skus) > MAX_SKUS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_SKUS} skus")
        levels = await self._inventory.availability(list(request.skus))
        items = []
        for sku in request.skus:
            level = levels.get(sku)
            items.append(
                inventory_pb2.Availability(
                    sku=sku,
                    available=level.available if level else 0,
                    tracked=level is not None,
                )
            )
        return inventory_pb2.GetAvailabilityResponse(items=items)
