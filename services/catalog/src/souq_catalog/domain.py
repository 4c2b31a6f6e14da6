"""Catalog entities and rules. No I/O, no framework."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

SKU_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,39}$")
CATEGORY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
# ISO 4217 currencies in circulation (checked against pycountry's list by the unit tests),
# without the units that are not money one can price in: metals (XAU...), bond-market and
# accounting units (XBA..., XDR, XSU, XUA, XAD), the testing code XTS and XXX ("no currency").
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU
    MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON
    RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP
    TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
    """.split()
)
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
        check_currency(self.currency)


def check_currency(code: str) -> None:
    if code not in ISO_4217:
        raise InvalidProduct(f"currency {code!r} is not an ISO 4217 currency code.")


def check_text(field: str, value: str, *, multiline: bool = False) -> None:
    """Shown text must not carry markup or invisible controls: `<` and `>` (a storefront that
    forgets to escape would run them), control characters, and format characters such as
    bidirectional overrides (which make text read otherwise than it is). A description may
    have line breaks and tabs."""
    allowed = "\n\t" if multiline else ""
    for char in value:
        if char in "<>":
            raise InvalidProduct(f"{field} must not contain '<' or '>'.")
        if char not in allowed and unicodedata.category(char) in ("Cc", "Cf"):
            raise InvalidProduct(
                f"{field} must not contain control or format characters (U+{ord(char):04X})."
            )


_NOT_IN_URLS = frozenset("\"'<>`")


def check_image_url(value: str) -> None:
    """An image is an absolute http(s) URL or a path on this site (`/images/x.jpg`); no other
    scheme (`javascript:`, `data:`...), no protocol-relative `//host`, no controls or spaces."""
    if not value:
        return  # no image
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in value):
        raise InvalidProduct("image_url must not contain spaces, control or format characters.")
    if "\\" in value:  # browsers read `/\host` as `//host`
        raise InvalidProduct("image_url must not contain a backslash.")
    if any(c in _NOT_IN_URLS for c in value):  # would end an HTML attribute or a tag early
        raise InvalidProduct("image_url must not contain quotes, angle brackets or backticks.")
    if value.startswith("/") and not value.startswith("//"):
        return
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        host = None
    if host is None or parts.scheme not in ("https", "http"):
        raise InvalidProduct("image_url must be an https:// or http:// URL, or a path from '/'.")


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
        check_text("name", self.name)
        check_text("description", self.description, multiline=True)
        check_image_url(self.image_url)
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
