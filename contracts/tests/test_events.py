"""Message contracts: recorded schemas are current, and no change breaks a published version."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, create_model
from souq.events import ProductCreated, message_types
from souq.events.compatibility import breaking_changes

CONTRACTS = Path(__file__).resolve().parents[1]


def test_every_message_type_is_namespaced_and_versioned() -> None:
    types = message_types()
    assert "catalog.ProductCreated.v1" in types
    for name, model in types.items():
        service, message, version = name.split(".")
        assert service.islower() and message[0].isupper() and version == f"v{model.VERSION}"


def test_no_message_breaks_a_consumer_of_its_published_schema() -> None:
    for path in sorted((CONTRACTS / "events").glob("*.json")):
        published = json.loads(path.read_text())
        model = message_types().get(path.name.removesuffix(".json"))
        assert model is not None, f"{path.name}: a published message type was removed"
        problems = breaking_changes(published, model.model_json_schema())
        assert not problems, f"{path.name} breaks its consumers: {problems}; publish a new version"


def test_recorded_schemas_are_current(generator: ModuleType) -> None:
    recorded = {p.name: p.read_text() for p in (CONTRACTS / "events").glob("*.json")}
    assert generator.message_schemas() == recorded, "run: .venv/bin/python contracts/generate.py"


class _Money(BaseModel):
    amount_cents: int
    currency: str


_FIELDS: dict[str, Any] = {
    "sku": (str, ...),
    "quantity": (int, ...),
    "note": (str | None, None),
    "price": (_Money, ...),
}
_V1 = create_model("Thing", **_FIELDS)


def _changed(**fields: Any) -> dict[str, Any]:
    """The schema of a model like _V1 with some fields replaced (None removes one)."""
    definitions = {**_FIELDS, **{k: v for k, v in fields.items() if v is not None}}
    for name in (k for k, v in fields.items() if v is None):
        del definitions[name]
    return create_model("Thing", **definitions).model_json_schema()


def test_the_checker_catches_a_removed_field() -> None:
    assert breaking_changes(_V1.model_json_schema(), _changed(quantity=None)) == [
        "quantity: removed"
    ]


def test_the_checker_catches_a_retyped_field_also_when_nested() -> None:
    assert breaking_changes(_V1.model_json_schema(), _changed(quantity=(str, ...))) == [
        "quantity: type changed from integer to string"
    ]

    class Cents(BaseModel):
        amount_cents: str
        currency: str

    assert breaking_changes(_V1.model_json_schema(), _changed(price=(Cents, ...))) == [
        "price.amount_cents: type changed from integer to string"
    ]


def test_the_checker_catches_an_optional_field_made_required() -> None:
    problems = breaking_changes(_V1.model_json_schema(), _changed(note=(str, ...)))
    assert problems == [
        "note: type changed from ['null', 'string'] to string",
        "note: now required",
    ]


def test_the_checker_allows_a_new_optional_field() -> None:
    assert breaking_changes(_V1.model_json_schema(), _changed(color=(str, "red"))) == []


def test_the_checker_flags_a_new_required_field() -> None:
    assert breaking_changes(_V1.model_json_schema(), _changed(color=(str, ...))) == [
        "color: now required"
    ]


def test_a_product_created_event_round_trips_and_ignores_unknown_fields() -> None:
    event = ProductCreated.model_validate(
        {
            "product_id": 7,
            "sku": "KIT-0007",
            "name": "Pot",
            "category": "kitchen",
            "price": {"amount_cents": 1299, "currency": "USD"},
            "added_later": True,
        }
    )
    assert ProductCreated.model_validate_json(event.model_dump_json()) == event
    assert ProductCreated.type_name() == "catalog.ProductCreated.v1"


def test_a_price_version_too_large_to_be_exact_is_invalid_not_a_retry() -> None:
    """A version past 2**53 is no version a publisher counts to: the consumer refuses it as
    invalid (dead-lettered at once) instead of failing to store it five times."""
    import pydantic
    from souq.events import ProductPriceChanged

    fields: dict[str, Any] = {
        "product_id": 1,
        "sku": "SKU-001",
        "name": "A lamp",
        "price": {"amount_cents": 100, "currency": "EUR"},
        "previous_price": {"amount_cents": 200, "currency": "EUR"},
        "changed_at": "2026-12-03T10:00:00Z",
    }
    assert ProductPriceChanged.model_validate({**fields, "price_version": 2**53}).price_version
    with pytest.raises(pydantic.ValidationError):
        ProductPriceChanged.model_validate({**fields, "price_version": 2**63})
