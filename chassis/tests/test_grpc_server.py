"""The chassis gRPC server: what it tells a stranger about itself."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from souq_chassis.grpc_server import GrpcServer
from souq_chassis.metrics import Metrics
from souq_chassis.testing import free_port

SERVICE = "souq.test.v1.Nothing"


async def listed_services(target: str) -> list[str]:
    """What server reflection lists, as grpcurl would ask for it."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        async for reply in stub.ServerReflectionInfo(iter([ask]), timeout=5):
            names += [s.name for s in reply.list_services_response.service]
        return names


async def test_reflection_is_off_unless_asked_for() -> None:
    server = GrpcServer("127.0.0.1", free_port(), Metrics(), [], [SERVICE])
    await server.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listed_services(f"127.0.0.1:{server.port}")
    finally:
        await server.stop(0)

    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_lists_the_services_when_enabled() -> None:
    server = GrpcServer("127.0.0.1", free_port(), Metrics(), [], [SERVICE], reflection=True)
    await server.start()
    try:
        names = await listed_services(f"127.0.0.1:{server.port}")
    finally:
        await server.stop(0)

    assert SERVICE in names and "grpc.health.v1.Health" in names
