"""Run a service's ASGI app on uvicorn + uvloop with graceful shutdown on SIGTERM: a public
listener and an internal one, both behind the limits of `http_server`."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from souq_chassis.http_server import ByListener, EdgeLimits, guarded_protocol, listen
from souq_chassis.settings import ServiceSettings


def server_config(app: Any, settings: ServiceSettings) -> uvicorn.Config:
    """uvicorn's configuration for a service: our loop, the guarded httptools protocol."""
    proxies = frozenset(p.strip() for p in settings.trusted_proxies.split(",") if p.strip())
    per_client = settings.max_connections_per_client
    if any(p == "*" or "/" in p for p in proxies):
        per_client = 0  # a proxy is not one address: no cap rather than capping its clients
    limits = EdgeLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
        max_connections_per_client=per_client,
        uncapped=proxies,
    )
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=guarded_protocol(limits),
        limit_concurrency=limits.max_connections,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # The client address is the socket's peer, never a header a client can write
        # (X-Forwarded-For); rate limits are keyed on it. Trust proxies explicitly, if ever.
        proxy_headers=settings.trusted_proxies != "",
        forwarded_allow_ips=settings.trusted_proxies or None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )


def listeners(app: Any, settings: ServiceSettings) -> tuple[Any, list[socket.socket]]:
    """The app to serve and its sockets: the public one, and the internal one when the app has
    an internal side (`create_app` gives it one)."""
    public = listen(settings.http_host, settings.http_port)
    internal_app = getattr(getattr(app, "state", None), "internal_app", None)
    if internal_app is None:
        return app, [public]
    internal = listen(settings.internal_host, settings.internal_port)
    return ByListener(app, internal_app, internal.getsockname()[1]), [public, internal]


def run(app: Any, settings: ServiceSettings) -> None:
    """Serve until SIGTERM or SIGINT: stop accepting, finish in-flight work, run lifespan shutdown.

    The app's lifespan starts and stops everything else the service runs (gRPC server,
    pools, relays), so one signal drains the whole process.
    """
    try:
        served, sockets = listeners(app, settings)
    except OSError as exc:
        structlog.get_logger("souq.http").error("cannot_listen", error=str(exc))
        raise SystemExit(1) from None
    server = uvicorn.Server(server_config(served, settings))
    # uvicorn re-raises the signal it caught once it has drained; a no-op handler makes that
    # re-raise a clean exit (status 0) instead of a death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(1)


def serve(
    service: str,
    settings: ServiceSettings,
    build_app: Callable[..., Any],
    *,
    database_url: str | None = None,
    migrations: Path | None = None,
) -> None:
    """A service's whole `main()`: logs, tracing, migrations, app, then serve until signalled."""
    from souq_chassis.db import apply_migrations
    from souq_chassis.logs import configure_logging
    from souq_chassis.private_files import restrict_umask
    from souq_chassis.tracing import configure_tracing

    restrict_umask()  # before anything makes a file: databases and keys are private
    configure_logging(service, settings.version, settings.log_level)
    provider = configure_tracing(service, settings.version, settings.trace_sample_ratio)
    if database_url and migrations:
        apply_migrations(database_url, migrations)
    app = build_app(settings, tracer_provider=provider)
    try:
        run(app, settings)
    finally:
        provider.shutdown()
