"""Composition root: settings → adapters → app. Run: `python -m souq_catalog`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from souq.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import AuthSettings, install_auth, jwks_verifier
from souq_chassis.db import open_database
from souq_chassis.grpc_server import GrpcServer
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.messaging.outbox import include_admin as include_outbox_admin
from souq_chassis.metrics import Metrics
from souq_chassis.runner import serve
from souq_chassis.settings import DatabaseSettings, GrpcSettings, MessagingSettings

from souq_catalog import api
from souq_catalog.domain import Category, Money, NewProduct
from souq_catalog.repository import ProductRepository
from souq_catalog.rpc import CatalogServicer
from souq_catalog.service import CatalogService

SERVICE = "catalog"
MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger(SERVICE)


class CatalogSettings(DatabaseSettings, GrpcSettings, MessagingSettings, AuthSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore")

    http_port: int = Field(default=8081, ge=0, le=65535)
    internal_port: int = Field(default=8091, ge=0, le=65535)
    grpc_port: int = Field(default=50061, ge=0, le=65535)
    seed_demo_data: bool = True


def demo_catalog() -> tuple[list[Category], list[NewProduct]]:
    """The demo catalog shipped with the service (seed/products.json)."""
    data = json.loads(resources.files("souq_catalog").joinpath("seed/products.json").read_text())
    cats = [Category(c["slug"], c["name"]) for c in data["categories"]]
    items = [
        NewProduct(
            sku=p["sku"],
            name=p["name"],
            description=p["description"],
            category=p["category"],
            price=Money(p["price"]["amount_cents"], p["price"]["currency"]),
            image_url=p["image_url"],
        )
        for p in data["products"]
    ]
    return cats, items


def build_app(settings: CatalogSettings, *, tracer_provider: Any = None) -> FastAPI:
    metrics = Metrics()
    db = open_database(settings.resolved_database_url(SERVICE), tracer_provider=tracer_provider)
    broker = open_broker(settings.broker_url, client_name=SERVICE, registry=metrics.registry)
    outbox = Outbox(db, broker, metrics.registry)
    catalog = CatalogService(db, ProductRepository(db), outbox)
    verifier, identity = jwks_verifier(settings, metrics)
    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        metrics,
        [
            lambda s: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(
                CatalogServicer(catalog), s
            )
        ],
        [catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name],
        reflection=settings.grpc_reflection,
    )

    async def seed() -> None:
        if settings.seed_demo_data and await catalog.import_catalog(*demo_catalog()):
            log.info("demo_catalog_seeded")

    app = create_app(
        title="Souq catalog",
        version=settings.version,
        metrics=metrics,
        lifespan=lifespan(
            on_start=[seed, identity.start],
            serving=[
                lambda: connected(broker, SUBSCRIPTIONS),
                outbox.running,
                lambda: grpc_server.running(settings.shutdown_grace_s),
            ],
            on_stop=[db.dispose, identity.close, verifier.close],
        ),
        readiness={"database": db.ping, "outbox": outbox.ready},
        max_body_bytes=settings.max_body_bytes,
    )
    install_auth(app, verifier)
    api.include(app, catalog)
    include_outbox_admin(app, outbox)
    return app


def main() -> None:
    settings = CatalogSettings()
    serve(
        SERVICE,
        settings,
        build_app,
        database_url=settings.resolved_database_url(SERVICE),
        migrations=MIGRATIONS,
    )


if __name__ == "__main__":
    main()
