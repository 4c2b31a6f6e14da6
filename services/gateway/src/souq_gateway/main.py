"""Composition root: settings → upstream clients → app. Run: `python -m souq_gateway`."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import AuthSettings, install_auth, jwks_verifier
from souq_chassis.grpc_client import GrpcUpstream
from souq_chassis.http_client import HttpUpstream
from souq_chassis.metrics import Metrics
from souq_chassis.ratelimit import RateLimiter
from souq_chassis.resilience import Policy
from souq_chassis.runner import serve
from starlette.middleware.cors import CORSMiddleware

from souq_gateway import api
from souq_gateway.service import Storefront
from souq_gateway.upstreams import CatalogClient, InventoryClient, ServiceProxy

SERVICE = "gateway"
log = structlog.get_logger(SERVICE)


class GatewaySettings(AuthSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    http_port: int = Field(default=8080, ge=0, le=65535)
    internal_port: int = Field(default=8090, ge=0, le=65535)
    # The public edge: one client address may hold a quarter of the connections, so that it
    # takes at least four to lock the others out (peers named in trusted_proxies: no cap).
    max_connections_per_client: int = Field(default=250, ge=0)
    catalog_url: str = "http://127.0.0.1:8081"
    inventory_target: str = "127.0.0.1:50062"
    inventory_url: str = "http://127.0.0.1:8082"  # admin restock only
    identity_url: str = "http://127.0.0.1:8083"
    cart_url: str = "http://127.0.0.1:8084"
    catalog_timeout_s: float = Field(default=1.0, gt=0)
    inventory_timeout_s: float = Field(default=0.25, gt=0)
    identity_timeout_s: float = Field(default=3.0, gt=0)  # a login waits for Argon2id
    cart_timeout_s: float = Field(default=1.0, gt=0)
    # The storefront's origin: the only one a browser may call this API from.
    storefront_origin: str = "http://localhost:5173"
    # Token buckets: a rate per second and a burst.
    client_rate_per_s: float = Field(default=100.0, gt=0)
    client_burst: int = Field(default=200, ge=1)
    user_rate_per_s: float = Field(default=50.0, gt=0)
    user_burst: int = Field(default=100, ge=1)
    sign_in_rate_per_s: float = Field(default=0.2, gt=0)  # 12 a minute once the burst is spent
    sign_in_burst: int = Field(default=10, ge=1)
    account_sign_in_rate_per_s: float = Field(default=0.1, gt=0)
    account_sign_in_burst: int = Field(default=5, ge=1)
    # Shared with identity, so that it believes the client address the gateway forwards (and
    # limits sign-in per real client); empty: identity sees every client as the gateway.
    forwarding_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("SOUQ_FORWARDING_SECRET", "GATEWAY_FORWARDING_SECRET"),
    )
    # Logins in flight to identity at once; more are refused (429) without asking identity.
    sign_in_concurrency: int = Field(default=4, ge=1)
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

    identity_http = HttpUpstream(
        "identity", settings.identity_url, metrics, policy(settings.identity_timeout_s)
    )
    cart_http = HttpUpstream("cart", settings.cart_url, metrics, policy(settings.cart_timeout_s))
    inventory_http = HttpUpstream(
        "inventory-http", settings.inventory_url, metrics, policy(settings.catalog_timeout_s)
    )
    verifier, jwks = jwks_verifier(settings, metrics)
    http_upstreams = [catalog_http, identity_http, cart_http, inventory_http, jwks]

    storefront = Storefront(CatalogClient(catalog_http), InventoryClient(inventory_grpc))

    app = create_app(
        title="Souq API",
        version=settings.version,
        metrics=metrics,
        lifespan=lifespan(
            on_start=[*(u.start for u in http_upstreams), inventory_grpc.start],
            on_stop=[*(u.close for u in http_upstreams), inventory_grpc.close, verifier.close],
        ),
        readiness={"catalog": catalog_http.ping},
        max_body_bytes=settings.max_body_bytes,
        openapi_prefix=api.PREFIX,
    )
    app.state.limits = api.Limits(
        per_client=RateLimiter(settings.client_rate_per_s, settings.client_burst),
        per_user=RateLimiter(settings.user_rate_per_s, settings.user_burst),
        sign_in_per_client=RateLimiter(settings.sign_in_rate_per_s, settings.sign_in_burst),
        sign_in_per_account=RateLimiter(
            settings.account_sign_in_rate_per_s, settings.account_sign_in_burst
        ),
    )
    install_auth(app, verifier)
    api.include(app, storefront)
    api.include_accounts(
        app,
        identity=ServiceProxy(identity_http, settings.forwarding_secret.get_secret_value()),
        cart=ServiceProxy(cart_http),
        catalog=ServiceProxy(catalog_http),
        inventory=ServiceProxy(inventory_http),
        sign_in_concurrency=settings.sign_in_concurrency,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.storefront_origin],
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=600,
    )
    return app


def main() -> None:
    serve(SERVICE, GatewaySettings(), build_app)


if __name__ == "__main__":
    main()
