"""Settings every service shares; each service subclasses with its own env_prefix (`CATALOG_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Typed settings read from environment variables with a per-service prefix."""

    model_config = SettingsConfigDict(env_prefix="SOUQ_", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    version: str = "0.1.0"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # The internal listener: /metrics and detailed /healthz, /readyz; never the public port.
    internal_host: str = "127.0.0.1"
    internal_port: int = Field(default=8010, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: Path = Path(".souq")  # as `souq up`
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # Limits at the edge of the process (both listeners): the request line and headers of one
    # request (431 past it), the time to send them, idle time between requests, the time to
    # send a body once the head is in (408), and open connections plus in-flight requests (503
    # past it).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    header_timeout_s: float = Field(default=5.0, gt=0)
    keep_alive_timeout_s: float = Field(default=5.0, gt=0)
    body_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    # Open connections from one client address (429 past it); 0: no cap. Off for services,
    # which the gateway calls from one address through pools of up to 256 connections.
    max_connections_per_client: int = Field(default=0, ge=0)
    # Addresses of reverse proxies whose X-Forwarded-For is believed (comma-separated, as
    # uvicorn's forwarded_allow_ips); empty: the client is the socket's peer.
    trusted_proxies: str = ""
    # Head sampling ratio for traces; parent-based, so a sampled caller's trace is always kept.
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class DatabaseSettings(ServiceSettings):
    """Settings of a service that owns a database."""

    database_url: str = ""

    def resolved_database_url(self, service: str) -> str:
        """The configured URL, or a SQLite file of the service's own under data_dir."""
        if self.database_url:
            return self.database_url
        path = (self.data_dir / f"{service}.db").resolve()
        return f"sqlite+aiosqlite:///{path}"


class GrpcSettings(ServiceSettings):
    """Settings of a service that also serves gRPC."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50050, ge=0, le=65535)
    # Server reflection lists every service and message to anyone: off unless debugging.
    grpc_reflection: bool = False


class MessagingSettings(ServiceSettings):
    """Settings of a service on the message broker. One variable for every service,
    SOUQ_BROKER_URL: `nats://…` (JetStream) or `amqp://…` (RabbitMQ); the default is the
    embedded NATS that `souq up` starts."""

    broker_url: str = Field(
        default="nats://127.0.0.1:14222",
        validation_alias=AliasChoices("SOUQ_BROKER_URL", "broker_url"),
    )
