"""The app factory: one FastAPI app per service with the platform's middleware and endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from time import perf_counter
from typing import Any

import structlog
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from souq_chassis.docs import install_docs
from souq_chassis.metrics import HttpMetricsMiddleware, Metrics
from souq_chassis.problems import install_problem_handlers, problem

ReadinessCheck = Callable[[], Awaitable[object]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]

_READINESS_TIMEOUT_S = 1.0
_OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz"})
log = structlog.get_logger("souq.access")


class RequestContextMiddleware:
    """Give every request an id (the caller's X-Request-ID or a new one), bound its body size,
    and log it once done (a JSON line with the trace and span ids of its server span)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        content_length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128:
                request_id = value.decode("latin-1")
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        request_id = request_id or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        limit = self.max_body_bytes
        if content_length > limit:
            response = problem(
                413, f"The request body exceeds {limit} bytes.", request_id=request_id
            )
            await response(scope, receive, send_with_id)
            return
        received = 0

        async def receive_bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"The request body exceeds {limit} bytes.")
            return message

        start = perf_counter()
        try:
            await self.app(scope, receive_bounded, send_with_id)
        finally:
            if self.access_log and scope["path"] not in _OPERATIONAL_PATHS:
                log.info(
                    "http_request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((perf_counter() - start) * 1000, 2),
                    request_id=request_id,
                )


def lifespan(
    *,
    on_start: Sequence[Callable[[], Awaitable[object]]] = (),
    serving: Sequence[Callable[[], AbstractAsyncContextManager[object]]] = (),
    on_stop: Sequence[Callable[[], Awaitable[object]]] = (),
) -> Lifespan:
    """A service's lifespan: run `on_start` in order, enter the `serving` contexts (servers,
    relays); at shutdown leave them in reverse, then run `on_stop` in reverse (close pools)."""

    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for stop in on_stop:
                stack.push_async_callback(stop)
            for start in on_start:
                await start()
            for enter in serving:
                await stack.enter_async_context(enter())
            yield

    return run


def create_app(
    *,
    title: str,
    version: str,
    metrics: Metrics,
    lifespan: Lifespan | None = None,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    max_body_bytes: int = 64 * 1024,
    openapi_prefix: str = "",
    access_log: bool = True,
    readiness_interval_s: float = 1.0,
) -> FastAPI:
    """A FastAPI app with problem+json errors, request ids, body limits, RED metrics, health.

    Readiness checks run in the background every `readiness_interval_s` (a flood of /readyz
    costs the dependencies nothing); `app.state.internal_app` serves /metrics and the checks'
    details, on the internal listener only.
    """
    app = FastAPI(
        title=title,
        version=version,
        lifespan=_checking_readiness(lifespan),
        # FastAPI's own OpenTelemetry: a server span per request (W3C trace context in and out)
        # on the global tracer provider. Metrics are ours (Prometheus), logs are ours
        # (structlog); per-operation spans cost more than they tell.
        telemetry={
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": _is_operational,
        },
        openapi_url=f"{openapi_prefix}/openapi.json",
        docs_url=None,  # ours, with pinned assets (souq_chassis.docs)
        redoc_url=None,
    )
    install_docs(app, f"{openapi_prefix}/docs", f"{openapi_prefix}/openapi.json")
    install_problem_handlers(app)
    # Public: a status only. The internal listener (runner) serves the details and metrics.
    report = app.state.readiness = Readiness(readiness or {}, readiness_interval_s)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False, response_model=None)
    async def readyz() -> Response | dict[str, Any]:
        if report.ready:
            return {"status": "ready"}
        return problem(503, "Not ready.", title="Service Unavailable")

    app.state.internal_app = internal_app(metrics, report)
    # Added last, so it runs first: every response, errors included, carries the request id.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=max_body_bytes, access_log=access_log
    )
    return app


class Readiness:
    """The last results of a service's readiness checks, renewed in the background."""

    def __init__(self, checks: Mapping[str, ReadinessCheck], interval_s: float) -> None:
        self.checks = dict(checks)
        self.interval_s = interval_s
        self.results: dict[str, str] = dict.fromkeys(self.checks, "not checked yet")

    @property
    def ready(self) -> bool:
        return all(result == "ok" for result in self.results.values())

    async def check(self) -> None:
        results = await asyncio.gather(*(_run_check(c) for c in self.checks.values()))
        self.results = dict(zip(self.checks, results, strict=True))

    @asynccontextmanager
    async def renewed(self) -> AsyncIterator[None]:
        """Checked once now, then every interval until the block ends."""
        await self.check()

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.interval_s)
                await self.check()

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _checking_readiness(inner: Lifespan | None) -> Lifespan:
    """The service's lifespan, with its readiness renewed while it serves."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[Any]:
        async with AsyncExitStack() as stack:
            state = await stack.enter_async_context(inner(app)) if inner else None
            await stack.enter_async_context(app.state.readiness.renewed())
            yield state

    return run


def internal_app(metrics: Metrics, readiness: Readiness) -> FastAPI:
    """What only the internal listener serves: metrics and the readiness checks' details."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    install_problem_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", response_model=None)
    async def readyz() -> Response | dict[str, Any]:
        if readiness.ready:
            return {"status": "ready", "checks": readiness.results}
        return problem(503, "Not ready.", title="Service Unavailable", checks=readiness.results)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _run_check(check: ReadinessCheck) -> str:
    try:
        async with asyncio.timeout(_READINESS_TIMEOUT_S):
            await check()
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"[:200]
    return "ok"


def _is_operational(scope: MutableMapping[str, Any]) -> bool:
    """Probes and scrapes are not traced."""
    return scope.get("path") in _OPERATIONAL_PATHS
