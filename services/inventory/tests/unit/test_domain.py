"""Inventory domain rules: a stock level is never impossible, and restocks are bounded."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from souq_inventory.domain import MAX_RESTOCK, InvalidQuantity, StockLevel, check_restock

# Stock levels


def test_available_is_on_hand_minus_reserved() -> None:
    level = StockLevel("KIT-0001", on_hand=10, reserved=3)

    assert (level.on_hand, level.reserved, level.available) == (10, 3, 7)


def test_a_new_stock_level_has_nothing_reserved() -> None:
    level = StockLevel("KIT-0001", on_hand=12)

    assert (level.reserved, level.available) == (0, 12)


def test_when_everything_is_reserved_nothing_is_available() -> None:
    assert StockLevel("KIT-0001", on_hand=5, reserved=5).available == 0


def test_an_empty_shelf_is_a_valid_stock_level() -> None:
    assert StockLevel("KIT-0001", on_hand=0).available == 0


@pytest.mark.parametrize(
    ("on_hand", "reserved"),
    [(-1, 0), (0, -1), (5, -1), (-5, -6), (5, 6), (0, 1)],
    ids=[
        "negative-on-hand",
        "negative-reserved",
        "negative-reserved-with-stock",
        "both-negative",
        "reserving-more-than-on-hand",
        "reserving-from-an-empty-shelf",
    ],
)
def test_an_impossible_stock_level_is_rejected(on_hand: int, reserved: int) -> None:
    with pytest.raises(InvalidQuantity, match="Impossible stock for KIT-0001"):
        StockLevel("KIT-0001", on_hand=on_hand, reserved=reserved)


def test_a_stock_level_cannot_be_changed_in_place() -> None:
    level = StockLevel("KIT-0001", on_hand=4)

    with pytest.raises(dataclasses.FrozenInstanceError):
        level.on_hand = -1  # type: ignore[misc]
    assert level.available == 4


# Restocks


@pytest.mark.parametrize("quantity", [1, 2, 999, MAX_RESTOCK])
def test_a_restock_of_one_unit_up_to_the_maximum_is_accepted(quantity: int) -> None:
    assert check_restock(quantity) == quantity


@pytest.mark.parametrize(
    "quantity",
    [0, -1, -MAX_RESTOCK, MAX_RESTOCK + 1, 10**18],
    ids=["zero", "minus-one", "negative-maximum", "one-over-maximum", "huge"],
)
def test_a_restock_outside_one_to_the_maximum_is_rejected(quantity: int) -> None:
    with pytest.raises(InvalidQuantity, match=f"from 1 to {MAX_RESTOCK}"):
        check_restock(quantity)


@pytest.mark.parametrize(
    "quantity",
    [1.5, 3.0, True, False, "3", None, Decimal("3"), [3]],
    ids=["float", "whole-float", "true", "false", "string", "none", "decimal", "list"],
)
def test_a_restock_that_is_not_a_whole_number_is_rejected(quantity: Any) -> None:
    with pytest.raises(InvalidQuantity, match="integer"):
        check_restock(quantity)
