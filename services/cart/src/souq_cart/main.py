"""Composition root: settings → adapters → app. Run: `python -m souq_cart`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import AuthSettings, install_auth, jwks_verifier
from souq_chassis.db import open_database
from souq_chassis.grpc_client import GrpcUpstream
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.consumer import Consumer
from souq_chassis.metrics import Metrics
from souq_chassis.resilience import Policy
from souq_chassis.runner import serve
from souq_chassis.settings import DatabaseSettings, MessagingSettings

from souq_cart import api, handlers
from souq_cart.domain import MAX_LINES, MAX_QUANTITY, QUANTITY_CEILING, CartLimits
from souq_cart.pricing import CatalogPricing
from souq_cart.repository import CartRepository
from souq_cart.service import CartService

SERVICE = "cart"
MIGRATIONS = Path(__file__).parent / "migrations"
MAX_IDS_PER_CALL = 500  # catalog's GetProducts takes at most this many ids


class CartSettings(DatabaseSettings, MessagingSettings, AuthSettings):
    model_config = SettingsConfigDict(env_prefix="CART_", extra="ignore")

    http_port: int = Field(default=8084, ge=0, le=65535)
    internal_port: int = Field(default=8094, ge=0, le=65535)
    catalog_target: str = "127.0.0.1:50061"  # catalog's gRPC
    catalog_timeout_s: float = Field(default=0.5, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=2.0, gt=0)
    # Prices younger than this are shown as cached; older ones are asked of catalog again.
    price_ttl_s: float = Field(default=300.0, gt=0)
    max_quantity: int = Field(default=MAX_QUANTITY, ge=1, le=QUANTITY_CEILING)
    max_lines: int = Field(default=MAX_LINES, ge=1, le=MAX_IDS_PER_CALL)


def build_app(settings: CartSettings, *, tracer_provider: Any = None) -> FastAPI:
    metrics = Metrics()
    db = open_database(settings.resolved_database_url(SERVICE), tracer_provider=tracer_provider)
    policy = Policy(
        timeout_s=settings.catalog_timeout_s,
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_s,
    )
    catalog = GrpcUpstream("catalog", settings.catalog_target, metrics, policy)
    verifier, identity = jwks_verifier(settings, metrics)
    carts = CartService(
        db,
        CartRepository(db),
        CatalogPricing(catalog),
        CartLimits(settings.max_quantity, settings.max_lines),
        price_ttl_s=settings.price_ttl_s,
    )
    broker = open_broker(settings.broker_url, client_name=SERVICE, registry=metrics.registry)
    consumer = Consumer(SERVICE, db, broker, handlers.subscriptions(carts), metrics.registry)

    app = create_app(
        title="Souq cart",
        version=settings.version,
        metrics=metrics,
        lifespan=lifespan(
            on_start=[catalog.start, identity.start],
            serving=[lambda: connected(broker, SUBSCRIPTIONS), consumer.running],
            on_stop=[db.dispose, catalog.close, identity.close, verifier.close],
        ),
        readiness={"database": db.ping},
        max_body_bytes=settings.max_body_bytes,
    )
    install_auth(app, verifier)
    api.include(app, carts)
    return app


def main() -> None:
    settings = CartSettings()
    serve(
        SERVICE,
        settings,
        build_app,
        database_url=settings.resolved_database_url(SERVICE),
        migrations=MIGRATIONS,
    )


if __name__ == "__main__":
    main()
