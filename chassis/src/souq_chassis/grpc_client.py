"""Outbound gRPC through `Upstream`: the remaining deadline goes on the wire with every attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from souq_chassis.metrics import Metrics
from souq_chassis.resilience import Policy, TransientFailure, Upstream

T = TypeVar("T")
S = TypeVar("S")

_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A channel that reconnects soon after its upstream restarts (gRPC's default: up to 2 min)."""
    options: list[tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 0),  # retries are ours, under one deadline
    ]
    return grpc.aio.insecure_channel(target, options=options)


class GrpcUpstream:
    """One upstream gRPC service: a channel and its fault-isolation policy."""

    def __init__(self, name: str, target: str, metrics: Metrics, policy: Policy) -> None:
        self.target = target
        self.upstream = Upstream(name, "grpc", policy, metrics)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[object, object] = {}

    async def start(self) -> None:
        """Open the channel; grpc.aio binds it to the running event loop."""
        self._channel = insecure_channel(self.target)
        self._stubs.clear()

    def stub(self, factory: Callable[[grpc.aio.Channel], S]) -> S:
        """The stub `factory(channel)` on this upstream's channel, built once per channel."""
        stub = self._stubs.get(factory)
        if stub is None:
            stub = self._stubs[factory] = factory(self.channel)
        return stub  # type: ignore[return-value]

    @property
    def channel(self) -> grpc.aio.Channel:
        assert self._channel is not None, "GrpcUpstream.start() was not awaited"
        return self._channel

    async def call(
        self,
        operation: str,
        invoke: Callable[[float], Awaitable[T]],
        *,
        idempotent: bool,
    ) -> T:
        """`invoke(timeout)` makes the stub call with that timeout; transient codes are retried."""

        async def attempt(seconds_left: float) -> T:
            try:
                return await invoke(seconds_left)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _TRANSIENT:
                    raise TransientFailure(f"{exc.code().name}: {exc.details()}") from exc
                raise

        return await self.upstream.call(operation, attempt, idempotent=idempotent)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
