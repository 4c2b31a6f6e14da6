"""A gRPC aio server with health and RED metrics, and reflection when asked for; started and
stopped by lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from souq_chassis.metrics import GrpcServerObserver, Metrics

Registrar = Callable[[grpc.aio.Server], None]
log = structlog.get_logger("souq.grpc")


class GrpcServer:
    """One grpc.aio server: `start()` binds and serves, `stop(grace)` drains in-flight calls.

    The server is built in `start()` because grpc.aio binds to the running event loop.
    Reflection (a map of every service and message for anyone who connects) is off unless
    `reflection` is set, for debugging with grpcurl.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        register: Sequence[Registrar],
        service_names: Sequence[str],
        *,
        reflection: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._metrics = metrics
        self._register = register
        self._service_names = [*service_names, ""]
        self._reflection = reflection
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> None:
        server = grpc.aio.server(interceptors=[GrpcServerObserver(self._metrics)])
        for add in self._register:
            add(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self._reflection:
            reflection.enable_server_reflection(
                [*self._service_names[:-1], health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise RuntimeError(f"cannot bind gRPC to {self.host}:{self.port}")
        self.port = bound
        await server.start()
        self._server = server
        log.info("grpc_serving", host=self.host, port=bound)
        for name in self._service_names:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        if self._server is None:
            return
        for name in self._service_names:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(grace_s)
        self._server = None

    @asynccontextmanager
    async def running(self, grace_s: float) -> AsyncIterator[GrpcServer]:
        """Serve for the duration of the block (a service's lifespan)."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop(grace_s)
