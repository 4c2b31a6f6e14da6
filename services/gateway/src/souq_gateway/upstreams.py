"""The gateway's upstreams: catalog over REST, inventory over gRPC. Adapters only."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import orjson
from pydantic import BaseModel, ConfigDict
from souq.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from souq_chassis.forwarding import vouch
from souq_chassis.grpc_client import GrpcUpstream
from souq_chassis.http_client import HttpReply, HttpUpstream
from souq_chassis.resilience import UpstreamUnavailable

from souq_gateway.domain import Stock


class UpstreamRejected(Exception):
    """The upstream answered with a client error (4xx) the gateway passes on."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Money(BaseModel):
    amount_cents: int
    currency: str


class CatalogProduct(BaseModel):
    """catalog's product representation (its OpenAPI `ProductBody`)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    sku: str
    name: str
    description: str
    category: str
    price: Money
    image_url: str


class CatalogPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[CatalogProduct]
    page: int
    page_size: int
    total: int


class CatalogCategory(BaseModel):
    slug: str
    name: str


class CatalogClient:
    def __init__(self, http: HttpUpstream) -> None:
        self._http = http

    async def product(self, product_id: int) -> CatalogProduct | None:
        reply = await self._http.request(
            "GET", f"/v1/products/{product_id}", operation="GetProduct"
        )
        if reply.status == 404:
            return None
        _raise_for_client_error(reply.status, reply.body)
        return CatalogProduct.model_validate_json(reply.body)

    async def products(self, params: dict[str, str | int]) -> CatalogPage:
        reply = await self._http.request(
            "GET", "/v1/products", params=params, operation="ListProducts"
        )
        _raise_for_client_error(reply.status, reply.body)
        return CatalogPage.model_validate_json(reply.body)

    async def categories(self) -> list[CatalogCategory]:
        reply = await self._http.request("GET", "/v1/categories", operation="ListCategories")
        _raise_for_client_error(reply.status, reply.body)
        return [CatalogCategory.model_validate(c) for c in reply.json()]


def _raise_for_client_error(status: int, body: bytes) -> None:
    if status >= 400:
        detail = "The catalog refused the request."
        try:
            detail = str(orjson.loads(body).get("detail", detail))
        except (ValueError, AttributeError):
            pass
        raise UpstreamRejected(status, detail)


class InventoryClient:
    def __init__(self, grpc: GrpcUpstream) -> None:
        self._grpc = grpc

    async def stock(self, skus: Sequence[str]) -> dict[str, Stock]:
        stub = self._grpc.stub(inventory_pb2_grpc.InventoryServiceStub)
        request = inventory_pb2.GetAvailabilityRequest(skus=list(skus))
        try:
            reply = await self._grpc.call(
                "GetAvailability",
                lambda timeout: stub.GetAvailability(request, timeout=timeout),
                idempotent=True,
            )
        except grpc.aio.AioRpcError as exc:  # a refusal tells the storefront no more than silence
            raise UpstreamUnavailable("inventory", f"{exc.code().name}: {exc.details()}") from exc
        return {i.sku: Stock(available=i.available, tracked=i.tracked) for i in reply.items}


_ANSWERS = frozenset({503})


class ServiceProxy:
    """Routes a service answers for itself: the gateway has checked the caller, the service
    checks again (the access token goes along) and its status and body pass through as they
    are, problem+json included. The request id goes along so both logs tell the same story."""

    def __init__(self, http: HttpUpstream, forwarding_secret: str = "") -> None:
        self._http = http
        self._forwarding_secret = forwarding_secret

    async def forward(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        token: str | None = None,
        request_id: str | None = None,
        json: object = None,
        client: str | None = None,
    ) -> HttpReply:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        if client is not None:  # believed by the service only with the shared secret
            headers.update(vouch(client, self._forwarding_secret))
        # A service's own 503 problem (catalog away, so the cart cannot price) is its answer.
        return await self._http.request(
            method, path, operation=operation, json=json, headers=headers, answers=_ANSWERS
        )
