"""The public API under /api/v1. Only these routes exist; nothing internal is proxied."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, Field
from souq_chassis.problems import problem, request_id_of
from souq_chassis.resilience import UpstreamUnavailable

from souq_gateway.domain import Availability
from souq_gateway.service import ProductNotFound, ProductView, Storefront
from souq_gateway.upstreams import Money, UpstreamRejected

PREFIX = "/api/v1"
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"


class Product(BaseModel):
    id: int
    sku: str
    name: str
    description: str
    category: str
    price: Money
    image_url: str
    availability: Availability = Field(
        description="in_stock, low_stock, out_of_stock, or unknown when inventory did not answer"
    )
    available_quantity: int | None = Field(
        description="Units that can be ordered now; null if unknown"
    )

    @classmethod
    def of(cls, view: ProductView) -> Product:
        p = view.product
        return cls(
            id=p.id,
            sku=p.sku,
            name=p.name,
            description=p.description,
            category=p.category,
            price=p.price,
            image_url=p.image_url,
            availability=view.availability,
            available_quantity=view.available_quantity,
        )


class ProductPage(BaseModel):
    items: list[Product]
    page: int
    page_size: int
    total: int


class Category(BaseModel):
    slug: str
    name: str


def include(app: FastAPI, storefront: Storefront) -> None:
    router = APIRouter(prefix=PREFIX, tags=["storefront"])

    @router.get("/products", summary="List, filter and search products")
    async def list_products(
        page: Annotated[int, Query(ge=1, le=10_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
        category: Annotated[str | None, Query(pattern=CATEGORY_PATTERN)] = None,
        q: Annotated[
            str | None, Query(min_length=1, max_length=200, description="Full-text search")
        ] = None,
    ) -> ProductPage:
        listing = await storefront.products(
            page=page, page_size=page_size, category=category, query=q
        )
        return ProductPage(
            items=[Product.of(v) for v in listing.items],
            page=listing.page,
            page_size=listing.page_size,
            total=listing.total,
        )

    @router.get("/products/{product_id}", summary="One product with its availability")
    async def get_product(product_id: Annotated[int, Path(ge=1, le=2**62)]) -> Product:
        return Product.of(await storefront.product(product_id))

    @router.get("/categories", summary="All categories")
    async def list_categories() -> list[Category]:
        return [Category(slug=c.slug, name=c.name) for c in await storefront.categories()]

    app.include_router(router)

    async def not_found(request: Request, exc: Exception) -> Response:
        return problem(404, f"No product {exc}.", request_id=request_id_of(request))

    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UpstreamRejected)
        return problem(exc.status, exc.detail, request_id=request_id_of(request))

    async def unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UpstreamUnavailable)
        return problem(
            503,
            f"The {exc.upstream} service is unavailable; try again shortly.",
            request_id=request_id_of(request),
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(ProductNotFound, not_found)
    app.add_exception_handler(UpstreamRejected, rejected)
    app.add_exception_handler(UpstreamUnavailable, unavailable)
