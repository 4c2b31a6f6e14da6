"""Composition root: settings → upstream clients → app. Run: `python -m souq_gateway`."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from souq_chassis.app import create_app, lifespan
from souq_chassis.grpc_client import GrpcUpstream
from souq_chassis.http_client import HttpUpstream
from souq_chassis.metrics import Metrics
from souq_chassis.resilience import Policy
from souq_chassis.runner import serve
from souq_chassis.settings import ServiceSettings

from souq_gateway import api
from souq_gateway.service import Storefront
from souq_gateway.upstreams import CatalogClient, InventoryClient

SERVICE = "gateway"
log = structlog.get_logger(SERVICE)


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    http_port: int = Field(default=8080, ge=0, le=65535)
    catalog_url: str = "http://127.0.0.1:8081"
    inventory_target: str = "127.0.0.1:50062"
    catalog_timeout_s: float = Field(default=1.0, gt=0)
    inventory_timeout_s: float = Field(default=0.25, gt=0)
    upstream_max_concurrency: int = Field(default=256, ge=1)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=2.0, gt=0)


def build_app(settings: GatewaySettings, *, tracer_provider: Any = None) -> FastAPI:
    metrics = Metrics()

    def policy(timeout_s: float) -> Policy:
        return Policy(
            timeout_s=timeout_s,
            max_concurrency=settings.upstream_max_concurrency,
            breaker_failures=settings.breaker_failures,
            breaker_reset_s=settings.breaker_reset_s,
        )

    catalog_http = HttpUpstream(
        "catalog", settings.catalog_url, metrics, policy(settings.catalog_timeout_s)
    )
    inventory_grpc = GrpcUpstream(
        "inventory", settings.inventory_target, metrics, policy(settings.inventory_timeout_s)
    )

    storefront = Storefront(CatalogClient(catalog_http), InventoryClient(inventory_grpc))

    app = create_app(
        title="Souq API",
        version=settings.version,
        metrics=metrics,
        lifespan=lifespan(
            on_start=[catalog_http.start, inventory_grpc.start],
            on_stop=[catalog_http.close, inventory_grpc.close],
        ),
        readiness={"catalog": catalog_http.ping},
        max_body_bytes=settings.max_body_bytes,
        openapi_prefix=api.PREFIX,
    )
    api.include(app, storefront)
    return app


def main() -> None:
    serve(SERVICE, GatewaySettings(), build_app)


if __name__ == "__main__":
    main()
