"""Catalog entities and rules. No I/O, no framework."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

SKU_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,39}$")
CATEGORY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
MAX_PRICE_CENTS = 100_000_000  # 1,000,000.00 in any currency
MAX_SEARCH_TERMS = 8
_WORD = re.compile(r"[^\W_]+")  # letters and digits; "_" separates, as in the index


class CatalogError(Exception):
    """A rule of the catalog was broken."""


class ProductNotFound(CatalogError):
    def __init__(self, key: int | str) -> None:
        super().__init__(f"No product {key!r}.")


class SkuAlreadyExists(CatalogError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"A product with SKU {sku!r} already exists.")


class UnknownCategory(CatalogError):
    def __init__(self, slug: str) -> None:
        super().__init__(f"No category {slug!r}.")


class InvalidProduct(CatalogError):
    """A field of a product is out of its allowed range or form."""


@dataclass(frozen=True, slots=True)
class Money:
    """Integer minor units and an ISO 4217 code: never a float."""

    amount_cents: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount_cents) is not int:
            raise InvalidProduct("amount_cents must be an integer number of cents.")
        if not 0 < self.amount_cents <= MAX_PRICE_CENTS:
            raise InvalidProduct(f"amount_cents must be between 1 and {MAX_PRICE_CENTS}.")
        if not CURRENCY_PATTERN.fullmatch(self.currency):
            raise InvalidProduct("currency must be a three-letter ISO 4217 code.")


@dataclass(frozen=True, slots=True)
class Category:
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class NewProduct:
    sku: str
    name: str
    description: str
    category: str
    price: Money
    image_url: str

    def __post_init__(self) -> None:
        if not SKU_PATTERN.fullmatch(self.sku):
            raise InvalidProduct("sku must be 3-40 upper-case letters, digits or dashes.")
        if not self.name.strip():
            raise InvalidProduct("name must not be blank.")
        if not CATEGORY_PATTERN.fullmatch(self.category):
            raise InvalidProduct("category must be a lower-case slug.")


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    sku: str
    name: str
    description: str
    category: str
    price: Money
    image_url: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int


def search_terms(text: str) -> list[str]:
    """The words a search matches on: lower-cased, punctuation dropped, at most a few.

    Every term must match (as a word prefix); syntax in the text is never interpreted.
    """
    terms = [w.lower() for w in _WORD.findall(text)][:MAX_SEARCH_TERMS]
    if not terms:
        raise InvalidProduct("A search needs at least one letter or digit.")
    return terms
