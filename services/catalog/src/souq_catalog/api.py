"""Catalog HTTP routes: parse, call a use case, respond. Admin routes live under /v1/admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from souq_chassis.auth import current_admin
from souq_chassis.problems import problem, request_id_of

from souq_catalog.domain import (
    CATEGORY_PATTERN,
    CURRENCY_PATTERN,
    MAX_PRICE_CENTS,
    SKU_PATTERN,
    CatalogError,
    InvalidProduct,
    Money,
    NewProduct,
    Product,
    ProductNotFound,
    SkuAlreadyExists,
    UnknownCategory,
    check_currency,
    check_image_url,
    check_text,
)
from souq_catalog.service import CatalogService

MAX_PAGE = 10_000
MAX_PAGE_SIZE = 100
ProductId = Annotated[int, Path(ge=1, le=2**62, description="Product id")]


def _rule(check: Callable[[str], None]) -> AfterValidator:
    """A domain rule as a field validator: its InvalidProduct becomes a 422 on that field."""

    def validate(value: str) -> str:
        try:
            check(value)
        except InvalidProduct as exc:
            raise ValueError(str(exc)) from None
        return value

    return AfterValidator(validate)


Currency = Annotated[
    StrictStr,
    Field(pattern=CURRENCY_PATTERN.pattern, description="An ISO 4217 code"),
    _rule(check_currency),
]


class MoneyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_cents: StrictInt = Field(gt=0, le=MAX_PRICE_CENTS)
    currency: Currency


class ProductBody(BaseModel):
    id: int
    sku: str
    name: str
    description: str
    category: str
    price: MoneyBody
    image_url: str

    @classmethod
    def of(cls, p: Product) -> ProductBody:
        return cls(
            id=p.id,
            sku=p.sku,
            name=p.name,
            description=p.description,
            category=p.category,
            price=MoneyBody(amount_cents=p.price.amount_cents, currency=p.price.currency),
            image_url=p.image_url,
        )


class ProductPage(BaseModel):
    items: list[ProductBody]
    page: int
    page_size: int
    total: int


class CategoryBody(BaseModel):
    slug: str
    name: str


class NewProductBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: StrictStr = Field(pattern=SKU_PATTERN.pattern)
    name: Annotated[
        StrictStr, Field(min_length=1, max_length=200), _rule(lambda v: check_text("name", v))
    ]
    description: Annotated[
        StrictStr,
        Field(max_length=4000),
        _rule(lambda v: check_text("description", v, multiline=True)),
    ] = ""
    category: StrictStr = Field(pattern=CATEGORY_PATTERN.pattern)
    price: MoneyBody
    image_url: Annotated[
        StrictStr,
        Field(max_length=500, description="https://... or a path on this site, /images/..."),
        _rule(check_image_url),
    ] = ""


def include(app: FastAPI, catalog: CatalogService) -> None:
    """Mount the catalog's routes and map its domain errors to problem+json."""
    public = APIRouter(prefix="/v1", tags=["catalog"])
    admin = APIRouter(
        prefix="/v1/admin", tags=["catalog admin"], dependencies=[Depends(current_admin)]
    )

    @public.get("/products")
    async def list_products(
        page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        category: Annotated[str | None, Query(pattern=CATEGORY_PATTERN.pattern)] = None,
        q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    ) -> ProductPage:
        result = await catalog.list_products(
            page=page, page_size=page_size, category=category, query=q
        )
        return ProductPage(
            items=[ProductBody.of(p) for p in result.items],
            page=result.page,
            page_size=result.page_size,
            total=result.total,
        )

    @public.get("/products/{product_id}")
    async def get_product(product_id: ProductId) -> ProductBody:
        return ProductBody.of(await catalog.get_product(product_id))

    @public.get("/products/by-sku/{sku}")
    async def get_product_by_sku(
        sku: Annotated[str, Path(pattern=SKU_PATTERN.pattern)],
    ) -> ProductBody:
        return ProductBody.of(await catalog.get_product_by_sku(sku))

    @public.get("/categories")
    async def list_categories() -> list[CategoryBody]:
        return [CategoryBody(slug=c.slug, name=c.name) for c in await catalog.categories()]

    @admin.post("/products", status_code=201)
    async def create_product(body: NewProductBody, response: Response) -> ProductBody:
        product = await catalog.create_product(
            NewProduct(
                sku=body.sku,
                name=body.name,
                description=body.description,
                category=body.category,
                price=Money(body.price.amount_cents, body.price.currency),
                image_url=body.image_url,
            )
        )
        response.headers["Location"] = f"/v1/products/{product.id}"
        return ProductBody.of(product)

    @admin.put("/products/{product_id}/price")
    async def change_price(product_id: ProductId, body: MoneyBody) -> ProductBody:
        price = Money(body.amount_cents, body.currency)
        return ProductBody.of(await catalog.change_price(product_id, price))

    app.include_router(public)
    app.include_router(admin)

    status_of: dict[type[CatalogError], int] = {
        ProductNotFound: 404,
        SkuAlreadyExists: 409,
        UnknownCategory: 422,
        InvalidProduct: 422,
    }

    async def catalog_error(request: Request, exc: Exception) -> Response:
        status = next((s for t, s in status_of.items() if isinstance(exc, t)), 422)
        return problem(status, str(exc), request_id=request_id_of(request))

    app.add_exception_handler(CatalogError, catalog_error)
