"""The public API under /api/v1. Only these routes exist; nothing internal is proxied.

Every route is metered per client IP; signed-in routes also per user, and sign-in more
strictly still (per IP and per account) to slow password guessing. Access tokens are verified
here, locally, against identity's cached JWKS; the services behind verify them again.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from souq_chassis.auth import Principal, TokenVerifier, bearer_token, current_admin, current_user
from souq_chassis.http_client import HttpReply
from souq_chassis.problems import problem, request_id_of
from souq_chassis.ratelimit import RateLimited, RateLimiter, client_key, rate_limited_problem
from souq_chassis.resilience import UpstreamUnavailable

from souq_gateway.domain import Availability
from souq_gateway.service import ProductNotFound, ProductView, Storefront
from souq_gateway.upstreams import Money, ServiceProxy, UpstreamRejected

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


@dataclass(frozen=True)
class Limits:
    """The gateway's rate limits (token buckets)."""

    per_client: RateLimiter  # every request, by client IP
    per_user: RateLimiter  # signed-in requests, by user id
    sign_in_per_client: RateLimiter  # login and register, by client IP
    sign_in_per_account: RateLimiter  # login, by email and client IP


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _limits(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


async def limit_client(request: Request) -> None:
    """Router dependency: one token from the client's bucket (before any other work)."""
    wait = _limits(request).per_client.take(client_key(_client_ip(request)), time.monotonic())
    if wait:
        raise RateLimited(wait)


async def optional_caller(request: Request) -> Principal | None:
    """A caller who sent a token is held to it, even on public routes: a bad token is a 401
    and a good one is metered per user."""
    token = bearer_token(request)
    if token is None:
        return None
    verifier: TokenVerifier = request.app.state.token_verifier
    return _metered(request, await verifier.verify(token))


async def signed_in(
    principal: Annotated[Principal, Depends(current_user)], request: Request
) -> str:
    """The verified caller's access token (to pass on), metered per user."""
    _metered(request, principal)
    token = bearer_token(request)
    assert token is not None
    return token


async def signed_in_admin(
    _: Annotated[Principal, Depends(current_admin)],
    token: Annotated[str, Depends(signed_in)],
) -> str:
    return token


def _metered(request: Request, principal: Principal) -> Principal:
    wait = _limits(request).per_user.take(principal.user_id, time.monotonic())
    if wait:
        raise RateLimited(wait)
    return principal


Token = Annotated[str, Depends(signed_in)]
AdminToken = Annotated[str, Depends(signed_in_admin)]
_PASSED_ON_HEADERS = ("Retry-After", "WWW-Authenticate", "Cache-Control")


async def relay(
    service: ServiceProxy,
    request: Request,
    method: str,
    path: str,
    operation: str,
    *,
    token: str | None = None,
    json: object = None,
    forward_client: bool = False,
) -> Response:
    """Forward to the service behind (with the request id, and the client's address if asked)
    and answer as it answered."""
    reply = await service.forward(
        method,
        path,
        operation=operation,
        token=token,
        json=json,
        request_id=request_id_of(request),
        client=_client_ip(request) if forward_client else None,
    )
    return passthrough(reply)


def passthrough(reply: HttpReply) -> Response:
    """The service's answer as it gave it."""
    if reply.status == 204:
        return Response(status_code=204)
    headers = {h: reply.headers[h] for h in _PASSED_ON_HEADERS if h in reply.headers}
    media_type = reply.headers.get("Content-Type", "application/json")
    return Response(reply.body, reply.status, headers=headers, media_type=media_type)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: StrictStr = Field(min_length=1, max_length=254)
    password: StrictStr = Field(min_length=1, max_length=128)


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: StrictStr = Field(min_length=1, max_length=256)


class LogoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: StrictStr | None = Field(default=None, min_length=1, max_length=256)


class RegistrationAccepted(BaseModel):
    """The same whether or not the email had an account (its owner is told)."""

    status: str
    detail: str


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int


class User(BaseModel):
    id: str
    email: str
    roles: list[str]
    created_at: datetime


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: StrictInt = Field(ge=1, le=2**62)
    quantity: StrictInt = Field(ge=1, le=10_000)


class QuantityBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: StrictInt = Field(ge=1, le=10_000)


class CartLine(BaseModel):
    product_id: int
    sku: str
    name: str
    unit_price: Money
    quantity: int
    line_total: Money


class Cart(BaseModel):
    items: list[CartLine]
    totals: list[Money] = Field(description="One per currency")
    item_count: int


ProductIdPath = Annotated[int, Path(ge=1, le=2**62)]
JsonBody = Annotated[dict[str, Any], Body(description="As the service behind defines it")]


def include_accounts(
    app: FastAPI,
    *,
    identity: ServiceProxy,
    cart: ServiceProxy,
    catalog: ServiceProxy,
    inventory: ServiceProxy,
    sign_in_concurrency: int = 8,
) -> None:
    """Sign-up, sign-in, the signed-in user's profile and cart, and the admin operations."""
    metered = [Depends(limit_client)]
    # Sign-ins waiting on identity's (deliberately slow) password hashing: beyond this many,
    # more are refused here at once, so a flood costs the gateway little and identity nothing.
    signing_in = asyncio.Semaphore(sign_in_concurrency)
    auth = APIRouter(prefix=f"{PREFIX}/auth", tags=["sign-in"], dependencies=metered)
    mine = APIRouter(prefix=PREFIX, tags=["me"], dependencies=metered)
    admin = APIRouter(prefix=f"{PREFIX}/admin", tags=["admin"], dependencies=metered)

    def sign_in_attempt(request: Request, account: str | None = None) -> None:
        limits, now = _limits(request), time.monotonic()
        wait = limits.sign_in_per_client.take(client_key(_client_ip(request)), now)
        if not wait and account is not None:
            # Per account *and* client: guessing one account's password is slow from anywhere,
            # yet nobody can lock a user out by failing to sign in as them from elsewhere.
            # The account as identity folds it (NFKC, lower case): one bucket per account,
            # however it is spelled (full-width letters included).
            account = unicodedata.normalize("NFKC", account).strip().lower()
            key = f"{account} {client_key(_client_ip(request))}"
            wait = limits.sign_in_per_account.take(key, now)
        if wait:
            raise RateLimited(wait)

    @auth.post(
        "/register",
        status_code=202,
        response_model=RegistrationAccepted,
        summary="Sign up (the same answer whether or not the email has an account)",
    )
    async def register(body: Credentials, request: Request) -> Response:
        sign_in_attempt(request)
        return await relay(
            identity,
            request,
            "POST",
            "/v1/register",
            "Register",
            json=body.model_dump(),
            forward_client=True,
        )

    @auth.post("/login", response_model=TokenPair, summary="Sign in")
    async def login(body: Credentials, request: Request) -> Response:
        sign_in_attempt(request, body.email)
        if signing_in.locked():
            raise RateLimited(1.0)
        async with signing_in:
            return await relay(
                identity,
                request,
                "POST",
                "/v1/login",
                "Login",
                json=body.model_dump(),
                forward_client=True,
            )

    @auth.post("/refresh", response_model=TokenPair, summary="Trade a refresh token for new ones")
    async def refresh(body: RefreshBody, request: Request) -> Response:
        return await relay(
            identity, request, "POST", "/v1/refresh", "Refresh", json=body.model_dump()
        )

    @auth.post("/logout", status_code=204, summary="Revoke refresh tokens")
    async def logout(token: Token, request: Request, body: LogoutBody | None = None) -> Response:
        sent = body.model_dump(exclude_none=True) if body else None
        return await relay(
            identity, request, "POST", "/v1/logout", "Logout", token=token, json=sent
        )

    @mine.get("/me", response_model=User, summary="The signed-in user")
    async def me(token: Token, request: Request) -> Response:
        return await relay(identity, request, "GET", "/v1/me", "Me", token=token)

    @mine.get("/cart", response_model=Cart, tags=["cart"], summary="The signed-in user's cart")
    async def get_cart(token: Token, request: Request) -> Response:
        return await relay(cart, request, "GET", "/v1/cart", "GetCart", token=token)

    @mine.post("/cart/items", status_code=201, response_model=Cart, tags=["cart"])
    async def add_item(body: NewItem, token: Token, request: Request) -> Response:
        return await relay(
            cart, request, "POST", "/v1/cart/items", "AddItem", token=token, json=body.model_dump()
        )

    @mine.patch("/cart/items/{product_id}", response_model=Cart, tags=["cart"])
    async def change_quantity(
        product_id: ProductIdPath, body: QuantityBody, token: Token, request: Request
    ) -> Response:
        return await relay(
            cart,
            request,
            "PATCH",
            f"/v1/cart/items/{product_id}",
            "ChangeQuantity",
            token=token,
            json=body.model_dump(),
        )

    @mine.delete("/cart/items/{product_id}", status_code=204, tags=["cart"])
    async def remove_item(product_id: ProductIdPath, token: Token, request: Request) -> Response:
        return await relay(
            cart, request, "DELETE", f"/v1/cart/items/{product_id}", "RemoveItem", token=token
        )

    @mine.delete("/cart", status_code=204, tags=["cart"], summary="Empty the cart")
    async def clear_cart(token: Token, request: Request) -> Response:
        return await relay(cart, request, "DELETE", "/v1/cart", "ClearCart", token=token)

    @admin.post("/products", status_code=201, summary="Add a product (catalog's body)")
    async def create_product(body: JsonBody, token: AdminToken, request: Request) -> Response:
        return await relay(
            catalog, request, "POST", "/v1/admin/products", "CreateProduct", token=token, json=body
        )

    @admin.put("/products/{product_id}/price", summary="Change a price")
    async def change_price(
        product_id: ProductIdPath, body: JsonBody, token: AdminToken, request: Request
    ) -> Response:
        return await relay(
            catalog,
            request,
            "PUT",
            f"/v1/admin/products/{product_id}/price",
            "ChangePrice",
            token=token,
            json=body,
        )

    @admin.post("/stock/{sku}/restock", summary="Add units to a SKU's stock")
    async def restock(
        sku: Annotated[str, Path(pattern=r"^[A-Z0-9][A-Z0-9-]{2,39}$")],
        body: JsonBody,
        token: AdminToken,
        request: Request,
    ) -> Response:
        return await relay(
            inventory,
            request,
            "POST",
            f"/v1/admin/stock/{sku}/restock",
            "Restock",
            token=token,
            json=body,
        )

    app.include_router(auth)
    app.include_router(mine)
    app.include_router(admin)

    app.add_exception_handler(RateLimited, rate_limited_problem)


def include(app: FastAPI, storefront: Storefront) -> None:
    router = APIRouter(
        prefix=PREFIX,
        tags=["storefront"],
        dependencies=[Depends(limit_client), Depends(optional_caller)],
    )

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
