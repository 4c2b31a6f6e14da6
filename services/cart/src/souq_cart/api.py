"""Cart HTTP routes: the caller's own cart, named by their verified token and never by a URL."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from souq_chassis.auth import CurrentUser
from souq_chassis.problems import problem, request_id_of

from souq_cart.domain import (
    QUANTITY_CEILING,
    Cart,
    CartError,
    ItemNotInCart,
    Money,
    PricesUnavailable,
)
from souq_cart.service import CartService

MAX_PRODUCT_ID = 2**62
RETRY_AFTER_S = 1
ProductId = Annotated[int, Path(ge=1, le=MAX_PRODUCT_ID, description="Product id")]
QUANTITY = "Units of the product: from 1 to the cart's maximum (99 unless configured)."


class MoneyBody(BaseModel):
    amount_cents: int
    currency: str


class CartItemBody(BaseModel):
    product_id: int
    sku: str
    name: str
    unit_price: MoneyBody
    quantity: int
    line_total: MoneyBody


class CartBody(BaseModel):
    items: list[CartItemBody]
    totals: list[MoneyBody] = Field(description="One per currency; empty for an empty cart")
    item_count: int = Field(description="Units in the cart, all products together")

    @classmethod
    def of(cls, cart: Cart) -> CartBody:
        # One validation of plain data (in pydantic's core) costs less than a model per field.
        return cls.model_validate(
            {
                "items": [
                    {
                        "product_id": line.product.product_id,
                        "sku": line.product.sku,
                        "name": line.product.name,
                        "unit_price": _money(line.product.unit_price),
                        "quantity": line.quantity,
                        "line_total": _money(line.line_total),
                    }
                    for line in cart.lines
                ],
                "totals": [_money(total) for total in cart.totals],
                "item_count": cart.item_count,
            }
        )


def _money(money: Money) -> dict[str, Any]:
    return {"amount_cents": money.amount_cents, "currency": money.currency}


class AddItemBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: StrictInt = Field(ge=1, le=MAX_PRODUCT_ID)
    quantity: StrictInt = Field(ge=1, le=QUANTITY_CEILING, description=QUANTITY)


class QuantityBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: StrictInt = Field(ge=1, le=QUANTITY_CEILING, description=QUANTITY)


def include(app: FastAPI, carts: CartService) -> None:
    """Mount the cart's routes and map its domain errors to problem+json."""
    router = APIRouter(prefix="/v1/cart", tags=["cart"])

    @router.get("")
    async def get_cart(user: CurrentUser) -> CartBody:
        return CartBody.of(await carts.cart_of(user.user_id))

    @router.post("/items", status_code=201)
    async def add_item(user: CurrentUser, body: AddItemBody) -> CartBody:
        return CartBody.of(await carts.add_item(user.user_id, body.product_id, body.quantity))

    @router.patch("/items/{product_id}")
    async def change_quantity(
        user: CurrentUser, product_id: ProductId, body: QuantityBody
    ) -> CartBody:
        cart = await carts.change_quantity(user.user_id, product_id, body.quantity)
        return CartBody.of(cart)

    @router.delete("/items/{product_id}", status_code=204)
    async def remove_item(user: CurrentUser, product_id: ProductId) -> None:
        await carts.remove_item(user.user_id, product_id)

    @router.delete("", status_code=204)
    async def clear_cart(user: CurrentUser) -> None:
        await carts.clear(user.user_id)

    app.include_router(router)

    async def cart_error(request: Request, exc: Exception) -> Response:
        request_id = request_id_of(request)
        if isinstance(exc, PricesUnavailable):
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            return problem(503, str(exc), request_id=request_id, headers=headers)
        status = 404 if isinstance(exc, ItemNotInCart) else 422
        return problem(status, str(exc), request_id=request_id)

    app.add_exception_handler(CartError, cart_error)
