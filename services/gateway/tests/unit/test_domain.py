"""What the storefront says about stock: pure logic."""

from __future__ import annotations

import pytest
from souq_gateway.domain import (
    LOW_STOCK_THRESHOLD,
    Availability,
    Stock,
    availability_of,
)


@pytest.mark.parametrize("available", [LOW_STOCK_THRESHOLD + 1, 50, 1_000_000])
def test_more_than_the_low_stock_threshold_is_in_stock(available: int) -> None:
    assert availability_of(Stock(available=available, tracked=True)) == (
        Availability.IN_STOCK,
        available,
    )


@pytest.mark.parametrize("available", [1, 2, LOW_STOCK_THRESHOLD])
def test_a_few_units_left_is_low_stock(available: int) -> None:
    assert availability_of(Stock(available=available, tracked=True)) == (
        Availability.LOW_STOCK,
        available,
    )


def test_the_low_stock_threshold_is_five_units() -> None:
    assert Stock(available=5, tracked=True).availability is Availability.LOW_STOCK
    assert Stock(available=6, tracked=True).availability is Availability.IN_STOCK


def test_no_units_left_is_out_of_stock() -> None:
    assert availability_of(Stock(available=0, tracked=True)) == (Availability.OUT_OF_STOCK, 0)


def test_a_negative_count_is_out_of_stock_and_never_shown_below_zero() -> None:
    assert availability_of(Stock(available=-3, tracked=True)) == (Availability.OUT_OF_STOCK, 0)


@pytest.mark.parametrize("available", [0, 1, 100])
def test_a_sku_inventory_does_not_track_cannot_be_bought(available: int) -> None:
    assert availability_of(Stock(available=available, tracked=False)) == (
        Availability.OUT_OF_STOCK,
        0,
    )


def test_no_answer_from_inventory_is_unknown_with_no_quantity() -> None:
    label, quantity = availability_of(None)

    assert label is Availability.UNKNOWN
    assert quantity is None


def test_availability_labels_are_the_public_api_strings() -> None:
    assert [a.value for a in Availability] == ["in_stock", "low_stock", "out_of_stock", "unknown"]
