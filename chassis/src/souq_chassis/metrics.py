"""Prometheus RED metrics for HTTP and gRPC, servers and clients, in a registry per app."""

from __future__ import annotations

from time import perf_counter
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("souq.access")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metric families one service process exposes at /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "http_server_requests_total",
            "HTTP requests served.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "HTTP request duration.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_requests = Counter(
            "grpc_server_requests_total", "gRPC calls served.", ["method", "code"], registry=r
        )
        self.grpc_duration = Histogram(
            "grpc_server_request_duration_seconds",
            "gRPC call duration.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.client_requests = Counter(
            "upstream_requests_total",
            "Outbound calls by outcome (ok, error, rejected).",
            ["kind", "upstream", "operation", "outcome"],
            registry=r,
        )
        self.client_duration = Histogram(
            "upstream_request_duration_seconds",
            "Outbound call duration, retries included.",
            ["kind", "upstream", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state",
            "Circuit state per upstream: 0 closed, 1 half-open, 2 open.",
            ["upstream"],
            registry=r,
        )


class HttpMetricsMiddleware:
    """Pure ASGI middleware: count and time every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_duration.labels(method, template).observe(perf_counter() - start)


class GrpcServerObserver(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Count, time and log every unary gRPC call by method and status code."""

    def __init__(self, metrics: Metrics, access_log: bool = True) -> None:
        self.metrics = metrics
        self.access_log = access_log

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method
        metrics = self.metrics
        access_log = self.access_log

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = perf_counter()
            code = "UNKNOWN"
            try:
                response = await inner(request, context)
                code = (context.code() or grpc.StatusCode.OK).name
                return response
            except grpc.aio.AbortError:
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
                raise
            finally:
                elapsed = perf_counter() - start
                metrics.grpc_requests.labels(method, code).inc()
                metrics.grpc_duration.labels(method).observe(elapsed)
                if access_log:
                    log.info(
                        "grpc_request",
                        method=method,
                        code=code,
                        duration_ms=round(elapsed * 1000, 2),
                    )

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
