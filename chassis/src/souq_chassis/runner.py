"""Run a service's ASGI app on uvicorn + uvloop with graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from souq_chassis.settings import ServiceSettings


def run(app: Any, settings: ServiceSettings) -> None:
    """Serve until SIGTERM or SIGINT: stop accepting, finish in-flight work, run lifespan shutdown.

    The app's lifespan starts and stops everything else the service runs (gRPC server,
    pools, relays), so one signal drains the whole process.
    """
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
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
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it caught once it has drained; a no-op handler makes that
    # re-raise a clean exit (status 0) instead of a death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
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
