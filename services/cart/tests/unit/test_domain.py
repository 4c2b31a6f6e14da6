"""Cart domain rules: quantities, merging an add into a line, totals and how much a cart holds."""

from __future__ import annotations

from typing import Any

import pytest
from souq_cart.domain import (
    QUANTITY_CEILING,
    Cart,
    CartLimits,
    CartLine,
    InvalidQuantity,
    Money,
    ProductPrice,
    TooManyLines,
    totals_of,
)

LIMITS = CartLimits(max_quantity=99, max_lines=50)


def line(product_id: int, amount_cents: int, quantity: int, currency: str = "USD") -> CartLine:
    unit_price = Money(amount_cents, currency)
    product = ProductPrice(product_id, f"SKU-{product_id:04d}", f"Product {product_id}", unit_price)
    return CartLine(product, quantity)


# Quantities


@pytest.mark.parametrize("quantity", [1, 2, 98, 99])
def test_a_line_holds_from_one_to_the_maximum_quantity(quantity: int) -> None:
    assert LIMITS.check_quantity(quantity) == quantity


@pytest.mark.parametrize(
    "quantity",
    [0, -1, 100, 2**70, 1.0, 1.5, True, "3", None],
    ids=["zero", "negative", "over", "huge", "whole-float", "fraction", "bool", "str", "none"],
)
def test_a_quantity_outside_the_bounds_or_not_an_integer_is_refused(quantity: Any) -> None:
    with pytest.raises(InvalidQuantity, match="from 1 to 99"):
        LIMITS.check_quantity(quantity)


def test_the_maximum_quantity_is_configurable() -> None:
    small = CartLimits(max_quantity=5)

    assert small.check_quantity(5) == 5
    with pytest.raises(InvalidQuantity, match="from 1 to 5"):
        small.check_quantity(6)


@pytest.mark.parametrize("max_quantity", [0, -1, QUANTITY_CEILING + 1])
def test_no_configuration_allows_quantities_the_database_refuses(max_quantity: int) -> None:
    with pytest.raises(ValueError, match="max_quantity"):
        CartLimits(max_quantity=max_quantity)


def test_a_cart_must_be_allowed_at_least_one_line() -> None:
    with pytest.raises(ValueError, match="max_lines"):
        CartLimits(max_lines=0)


# Adding


def test_adding_a_product_not_in_the_cart_starts_its_line() -> None:
    assert LIMITS.quantity_after_adding(None, 3, lines=4) == 3


def test_adding_a_product_already_in_the_cart_adds_to_its_quantity() -> None:
    assert LIMITS.quantity_after_adding(4, 3, lines=4) == 7


def test_adding_up_to_the_maximum_quantity_is_allowed() -> None:
    assert LIMITS.quantity_after_adding(60, 39, lines=1) == 99


def test_adding_beyond_the_maximum_quantity_is_refused_saying_why() -> None:
    with pytest.raises(InvalidQuantity, match=r"holds 60.*adding 40.*100.*99"):
        LIMITS.quantity_after_adding(60, 40, lines=1)


@pytest.mark.parametrize("added", [0, -2, 100])
def test_an_add_of_an_impossible_quantity_is_refused_even_to_an_existing_line(
    added: int,
) -> None:
    with pytest.raises(InvalidQuantity):
        LIMITS.quantity_after_adding(1, added, lines=1)


def test_a_new_product_in_a_full_cart_is_refused() -> None:
    assert LIMITS.quantity_after_adding(None, 1, lines=49) == 1
    with pytest.raises(TooManyLines, match="50"):
        LIMITS.quantity_after_adding(None, 1, lines=50)


def test_more_of_a_product_already_in_a_full_cart_is_allowed() -> None:
    assert LIMITS.quantity_after_adding(2, 1, lines=50) == 3


# Totals


def test_a_line_total_is_its_unit_price_times_its_quantity() -> None:
    assert line(1, 1999, 3).line_total == Money(5997, "USD")


def test_an_empty_cart_has_no_totals_and_no_items() -> None:
    cart = Cart()

    assert (cart.totals, cart.item_count) == ([], 0)


def test_a_cart_totals_each_currency_apart_and_counts_every_unit() -> None:
    cart = Cart((line(1, 1000, 2), line(2, 250, 1, "EUR"), line(3, 99, 4), line(4, 1, 1, "EUR")))

    assert cart.totals == [Money(251, "EUR"), Money(2396, "USD")]
    assert cart.item_count == 8


def test_amounts_of_one_currency_are_summed_exactly_in_cents() -> None:
    assert totals_of([Money(10**12, "USD"), Money(1, "USD")]) == [Money(10**12 + 1, "USD")]
