"""Composition root: settings → adapters → app. Run: `python -m souq_inventory`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from souq.events.topology import SUBSCRIPTIONS
from souq.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import AuthSettings, install_auth, jwks_verifier
from souq_chassis.db import open_database
from souq_chassis.grpc_server import GrpcServer
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.consumer import Consumer
from souq_chassis.metrics import Metrics
from souq_chassis.runner import serve
from souq_chassis.settings import DatabaseSettings, GrpcSettings, MessagingSettings

from souq_inventory import api, handlers
from souq_inventory.domain import StockLevel
from souq_inventory.repository import StockRepository
from souq_inventory.rpc import InventoryServicer
from souq_inventory.service import InventoryService

SERVICE = "inventory"
MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger(SERVICE)


class InventorySettings(DatabaseSettings, GrpcSettings, MessagingSettings, AuthSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    http_port: int = Field(default=8082, ge=0, le=65535)
    internal_port: int = Field(default=8092, ge=0, le=65535)
    grpc_port: int = Field(default=50062, ge=0, le=65535)
    seed_demo_data: bool = True


def demo_stock() -> list[StockLevel]:
    """The demo stock shipped with the service (seed/stock.json)."""
    data = json.loads(resources.files("souq_inventory").joinpath("seed/stock.json").read_text())
    return [StockLevel(s["sku"], s["on_hand"]) for s in data["stock"]]


def build_app(settings: InventorySettings, *, tracer_provider: Any = None) -> FastAPI:
    metrics = Metrics()
    db = open_database(settings.resolved_database_url(SERVICE), tracer_provider=tracer_provider)
    inventory = InventoryService(StockRepository(db))
    broker = open_broker(settings.broker_url, client_name=SERVICE, registry=metrics.registry)
    consumer = Consumer(SERVICE, db, broker, handlers.subscriptions(inventory), metrics.registry)
    servicer = InventoryServicer(inventory)
    verifier, identity = jwks_verifier(settings, metrics)
    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        metrics,
        [lambda s: inventory_pb2_grpc.add_InventoryServiceServicer_to_server(servicer, s)],
        [inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name],
        reflection=settings.grpc_reflection,
    )

    async def seed() -> None:
        if settings.seed_demo_data and await inventory.import_stock(demo_stock()):
            log.info("demo_stock_seeded")

    app = create_app(
        title="Souq inventory",
        version=settings.version,
        metrics=metrics,
        lifespan=lifespan(
            on_start=[seed, identity.start],
            serving=[
                lambda: connected(broker, SUBSCRIPTIONS),
                consumer.running,
                lambda: grpc_server.running(settings.shutdown_grace_s),
            ],
            on_stop=[db.dispose, identity.close, verifier.close],
        ),
        readiness={"database": db.ping},
        max_body_bytes=settings.max_body_bytes,
    )
    install_auth(app, verifier)
    api.include(app, inventory)
    return app


def main() -> None:
    settings = InventorySettings()
    serve(
        SERVICE,
        settings,
        build_app,
        database_url=settings.resolved_database_url(SERVICE),
        migrations=MIGRATIONS,
    )


if __name__ == "__main__":
    main()
