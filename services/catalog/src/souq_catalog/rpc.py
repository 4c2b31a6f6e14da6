"""Catalog gRPC servicer: the same shape as api.py, for other services."""

from __future__ import annotations

import grpc
from souq.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from souq.type.v1 import money_pb2

from souq_catalog.domain import Product
from souq_catalog.service import CatalogService

MAX_IDS = 500


def _message(p: Product) -> catalog_pb2.Product:
    return catalog_pb2.Product(
        id=p.id,
        sku=p.sku,
        name=p.name,
        description=p.description,
        category=p.category,
        price=money_pb2.Money(amount_cents=p.price.amount_cents, currency=p.price.currency),
        image_url=p.image_url,
    )


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, catalog: CatalogService) -> None:
        self._catalog = catalog

    async def GetProducts(
        self, request: catalog_pb2.GetProductsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.GetProductsResponse:
        if len(request.ids) > MAX_IDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_IDS} ids")
        found, missing = await self._catalog.get_products(list(request.ids))
        return catalog_pb2.GetProductsResponse(
            products=[_message(p) for p in found], missing_ids=missing
        )
