"""Fault isolation for one upstream: deadline, concurrency limit, circuit breaker, retries, metrics.

The HTTP and gRPC clients are thin adapters over `Upstream.call`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from time import perf_counter
from typing import TypeVar

import stamina

from souq_chassis.metrics import Metrics

T = TypeVar("T")


class UpstreamUnavailable(Exception):
    """The upstream could not answer in time: circuit open, deadline passed, or retries spent."""

    def __init__(self, upstream: str, reason: str) -> None:
        super().__init__(f"{upstream}: {reason}")
        self.upstream = upstream
        self.reason = reason


class TransientFailure(Exception):
    """A failure worth retrying (for idempotent calls) and counted by the breaker."""


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `reset_timeout_s`, lets one
    probe through (half-open) and closes again if it succeeds."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 5.0,
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.state = BreakerState.CLOSED
        self._on_change = on_change
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time."""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.reset_timeout_s:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def abandon(self) -> None:
        """A call ended without a verdict (cancelled): free the probe slot."""
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self._on_change:
            self._on_change(state)


@dataclass(frozen=True)
class Policy:
    """How one upstream is called. `timeout_s` bounds the whole call, retries included."""

    timeout_s: float = 1.0
    attempts: int = 3
    backoff_initial_s: float = 0.02
    backoff_max_s: float = 0.2
    max_concurrency: int = 64
    breaker_failures: int = 5
    breaker_reset_s: float = 5.0


class Upstream:
    """Deadline, bulkhead, circuit breaker, jittered retries (idempotent calls only), metrics."""

    def __init__(self, name: str, kind: str, policy: Policy, metrics: Metrics) -> None:
        self.name = name
        self.kind = kind
        self.policy = policy
        self._metrics = metrics
        gauge = metrics.breaker_state.labels(name)
        gauge.set(BreakerState.CLOSED)
        self.breaker = CircuitBreaker(
            policy.breaker_failures, policy.breaker_reset_s, on_change=gauge.set
        )
        self._bulkhead = asyncio.Semaphore(policy.max_concurrency)

    async def call(
        self,
        operation: str,
        attempt: Callable[[float], Awaitable[T]],
        *,
        idempotent: bool,
    ) -> T:
        """Run `attempt(seconds_left)`; it raises TransientFailure for what may be retried."""
        metrics = self._metrics
        if not self.breaker.allow():
            metrics.client_requests.labels(self.kind, self.name, operation, "rejected").inc()
            raise UpstreamUnavailable(self.name, "circuit open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.timeout_s
        start = perf_counter()
        outcome = "error"
        verdict = False
        try:
            async with asyncio.timeout_at(deadline), self._bulkhead:
                try:
                    # The common case, a first attempt that works, skips the retry machinery.
                    result = await attempt(max(deadline - loop.time(), 0.001))
                except TransientFailure:
                    if not idempotent or self.policy.attempts < 2:
                        raise
                    result = await self._retry(attempt, deadline)
            self.breaker.record_success()
            verdict = True
            outcome = "ok"
            return result
        except TransientFailure as exc:
            self.breaker.record_failure()
            verdict = True
            raise UpstreamUnavailable(self.name, str(exc) or type(exc).__name__) from exc
        except TimeoutError as exc:
            self.breaker.record_failure()
            verdict = True
            raise UpstreamUnavailable(self.name, "deadline exceeded") from exc
        finally:
            if not verdict:
                self.breaker.abandon()
            metrics.client_requests.labels(self.kind, self.name, operation, outcome).inc()
            metrics.client_duration.labels(self.kind, self.name, operation).observe(
                perf_counter() - start
            )

    async def _retry(self, attempt: Callable[[float], Awaitable[T]], deadline: float) -> T:
        """The remaining attempts, each after a jittered backoff, within the same deadline."""
        loop = asyncio.get_running_loop()
        policy = self.policy
        await asyncio.sleep(policy.backoff_initial_s * (1 + random.random()))
        async for retry in stamina.retry_context(
            on=TransientFailure,
            attempts=policy.attempts - 1,
            timeout=None,
            wait_initial=policy.backoff_initial_s,
            wait_max=policy.backoff_max_s,
            wait_jitter=policy.backoff_initial_s,
        ):
            with retry:
                result = await attempt(max(deadline - loop.time(), 0.001))
        return result
