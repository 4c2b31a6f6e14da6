"""Catalog over gRPC: names and prices of products, as catalog says now. An adapter only."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from souq.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from souq_chassis.grpc_client import GrpcUpstream
from souq_chassis.resilience import UpstreamUnavailable

from souq_cart.domain import Money, PricesUnavailable, ProductPrice


class CatalogPricing:
    def __init__(self, catalog: GrpcUpstream) -> None:
        self._catalog = catalog

    async def prices(self, product_ids: Sequence[int]) -> tuple[dict[int, ProductPrice], list[int]]:
        """The products catalog knows, by id, and the ids it does not know; one call.

        Raises PricesUnavailable if catalog does not answer (deadline, breaker, refusal)."""
        stub = self._catalog.stub(catalog_pb2_grpc.CatalogServiceStub)
        request = catalog_pb2.GetProductsRequest(ids=list(product_ids))
        try:
            reply = await self._catalog.call(
                "GetProducts",
                lambda timeout: stub.GetProducts(request, timeout=timeout),
                idempotent=True,
            )
        except UpstreamUnavailable as exc:
            raise PricesUnavailable(str(exc)) from exc
        except grpc.aio.AioRpcError as exc:
            raise PricesUnavailable(f"catalog: {exc.code().name}: {exc.details()}") from exc
        found = {
            p.id: ProductPrice(p.id, p.sku, p.name, Money(p.price.amount_cents, p.price.currency))
            for p in reply.products
        }
        return found, list(reply.missing_ids)
