"""Catalog domain rules: money, new products and what a search matches on."""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from typing import Any

import pytest
from souq_catalog.domain import (
    ISO_4217,
    MAX_PRICE_CENTS,
    MAX_SEARCH_TERMS,
    InvalidProduct,
    Money,
    NewProduct,
    search_terms,
)

PLAIN_WORD = re.compile(r"[^\W_]+")  # letters and digits only: nothing FTS5 could read as syntax


def new_product(**changes: Any) -> NewProduct:
    fields: dict[str, Any] = {
        "sku": "KIT-0100",
        "name": "Copper Kettle",
        "description": "Hand-hammered.",
        "category": "kitchen",
        "price": Money(4599, "USD"),
        "image_url": "",
    }
    return NewProduct(**{**fields, **changes})


# Money


def test_money_keeps_integer_cents_and_its_currency() -> None:
    price = Money(1999, "EUR")

    assert (price.amount_cents, price.currency) == (1999, "EUR")


@pytest.mark.parametrize("amount_cents", [1, 250, MAX_PRICE_CENTS])
def test_money_accepts_one_cent_up_to_the_maximum_price(amount_cents: int) -> None:
    assert Money(amount_cents, "USD").amount_cents == amount_cents


@pytest.mark.parametrize(
    "amount_cents",
    [12.5, 12.0, float("nan"), True, False, "1200", None, Decimal("12")],
    ids=["float", "whole-float", "nan", "true", "false", "string", "none", "decimal"],
)
def test_money_refuses_an_amount_that_is_not_integer_cents(amount_cents: Any) -> None:
    with pytest.raises(InvalidProduct, match="integer number of cents"):
        Money(amount_cents, "USD")


@pytest.mark.parametrize(
    "amount_cents",
    [0, -1, -MAX_PRICE_CENTS, MAX_PRICE_CENTS + 1, 10**30],
    ids=["zero", "minus-one-cent", "negative-maximum", "one-cent-over-maximum", "huge"],
)
def test_money_refuses_an_amount_outside_one_cent_to_the_maximum(amount_cents: int) -> None:
    with pytest.raises(InvalidProduct, match=f"between 1 and {MAX_PRICE_CENTS}"):
        Money(amount_cents, "USD")


@pytest.mark.parametrize(
    "currency",
    ["usd", "Usd", "US", "USDX", "", "U$D", "U D", " USD", "USD ", "USD\n", "ÜSD", "123"],
)
def test_money_refuses_a_currency_that_is_not_a_three_letter_iso_code(currency: str) -> None:
    with pytest.raises(InvalidProduct, match="ISO 4217"):
        Money(100, currency)


def test_money_cannot_be_changed_once_made() -> None:
    price = Money(100, "USD")

    with pytest.raises(dataclasses.FrozenInstanceError):
        price.amount_cents = 1  # type: ignore[misc]
    assert price.amount_cents == 100


# New products


@pytest.mark.parametrize("sku", ["ABC", "KIT-0001", "9-9", "A" * 40, "X1-Y2-Z3"])
def test_a_new_product_accepts_upper_case_skus_of_three_to_forty_characters(sku: str) -> None:
    assert new_product(sku=sku).sku == sku


@pytest.mark.parametrize(
    "sku",
    [
        "kit-0001",
        "Kit-0001",
        "AB",
        "",
        "-ABC",
        "A" * 41,
        "KIT 0001",
        "KIT_0001",
        "KIT.0001",
        "KIT-0001\n",
        "\nKIT-0001",
        "ÄBC-1",
    ],
)
def test_a_new_product_with_a_malformed_sku_is_rejected(sku: str) -> None:
    with pytest.raises(InvalidProduct, match="sku"):
        new_product(sku=sku)


@pytest.mark.parametrize("name", ["", " ", "\t\n  "])
def test_a_new_product_with_a_blank_name_is_rejected(name: str) -> None:
    with pytest.raises(InvalidProduct, match="name"):
        new_product(name=name)


@pytest.mark.parametrize("category", ["kitchen", "home-decor", "k", "a" * 40, "2024-gifts"])
def test_a_new_product_accepts_a_lower_case_category_slug(category: str) -> None:
    assert new_product(category=category).category == category


@pytest.mark.parametrize(
    "category",
    [
        "Kitchen",
        "",
        "-kitchen",
        "home decor",
        "home_decor",
        "a" * 41,
        "kitchen\n",
        "../kitchen",
        "küche",
    ],
)
def test_a_new_product_in_a_malformed_category_is_rejected(category: str) -> None:
    with pytest.raises(InvalidProduct, match="category"):
        new_product(category=category)


# Search terms


def test_search_terms_are_the_lower_cased_words_in_order() -> None:
    assert search_terms("Copper COFFEE pot") == ["copper", "coffee", "pot"]


def test_search_terms_drop_punctuation() -> None:
    assert search_terms("copper, pot! (bowl)... 'tea'?") == ["copper", "pot", "bowl", "tea"]


def test_search_terms_keep_letters_beyond_ascii_and_digits() -> None:
    assert search_terms("Café ÉPICES 250ml") == ["café", "épices", "250ml"]


def test_an_underscore_separates_search_terms_as_the_index_does() -> None:
    assert search_terms("copper_pot") == ["copper", "pot"]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ('"copper pot"', ["copper", "pot"]),
        ("copper AND pot", ["copper", "and", "pot"]),
        ("copper OR brass", ["copper", "or", "brass"]),
        ("NOT copper", ["not", "copper"]),
        ("NEAR(copper brass, 5)", ["near", "copper", "brass", "5"]),
        ("copp*", ["copp"]),
        ("(copper) OR (brass", ["copper", "or", "brass"]),
        ("name:copper -brass ^tea + {x y}", ["name", "copper", "brass", "tea", "x", "y"]),
        ('" OR 1=1; DROP TABLE products; --', ["or", "1", "1", "drop", "table", "products"]),
    ],
    ids=["quotes", "and", "or", "not", "near", "star", "parentheses", "columns-and-carets", "sql"],
)
def test_search_syntax_becomes_plain_words(text: str, terms: list[str]) -> None:
    found = search_terms(text)

    assert found == terms
    assert all(PLAIN_WORD.fullmatch(term) and term == term.lower() for term in found)


def test_a_search_uses_at_most_the_first_few_terms() -> None:
    words = [f"word{i}" for i in range(MAX_SEARCH_TERMS * 3)]

    assert search_terms(" ".join(words)) == words[:MAX_SEARCH_TERMS]


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\t\n",
        '"',
        '""',
        "*",
        "()",
        "-",
        "^",
        ":",
        '"*" ( ) - + ^ : { }',
        "___",
        "—…",
        "\x00",
    ],
)
def test_a_search_without_any_letter_or_digit_is_rejected(text: str) -> None:
    with pytest.raises(InvalidProduct, match="letter or digit"):
        search_terms(text)


def test_the_currency_list_is_iso_4217_as_pycountry_has_it() -> None:
    import pycountry

    not_money = {"XAD", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU"}
    not_money |= {"XTS", "XUA", "XXX"}
    listed = {c.alpha_3 for c in pycountry.currencies}

    assert listed - not_money == ISO_4217


@pytest.mark.parametrize("code", ["ABC", "usd", "US", "XTS", "XXX", "XAU"])
def test_a_price_in_anything_but_an_iso_4217_currency_is_refused(code: str) -> None:
    with pytest.raises(InvalidProduct, match="ISO 4217"):
        Money(100, code)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "vbscript:x",
        "//evil.example/a.jpg",
        "/\\evil.example",
        "ftp://files.example/a.jpg",
        "https://",
        "http://[::1",
        "/images/a b.jpg",
        "/images/\x7f.jpg",
        '/images/x.jpg?"><script>',  # a site path that would close the attribute and the tag
        'https://evil.example/x.jpg"onerror="alert(1)',
        "https://shop.example/a.jpg'",
        "/images/`x`.jpg",
    ],
)
def test_an_image_url_is_http_or_a_site_path_and_nothing_else(url: str) -> None:
    with pytest.raises(InvalidProduct, match="image_url"):
        new_product(image_url=url)


@pytest.mark.parametrize("name", ["<b>Kettle</b>", "Kettle >", "Ket\ttle", "Ket\u200btle"])
def test_a_name_with_markup_or_invisible_characters_is_refused(name: str) -> None:
    with pytest.raises(InvalidProduct, match="name"):
        new_product(name=name)


def test_a_description_may_have_line_breaks_but_no_markup() -> None:
    assert new_product(description="One.\n\tTwo & three.").description
    with pytest.raises(InvalidProduct, match="description"):
        new_product(description="<iframe src=x>")
