"""Outbound HTTP on aiohttp, through `Upstream`: deadline, breaker, retries for idempotent calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from souq_chassis.metrics import Metrics
from souq_chassis.problems import PROBLEM_JSON
from souq_chassis.resilience import Policy, TransientFailure, Upstream

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRYABLE_STATUS = frozenset({502, 503, 504})


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpUpstream:
    """One upstream HTTP service: a pooled aiohttp session and its fault-isolation policy."""

    def __init__(self, name: str, base_url: str, metrics: Metrics, policy: Policy) -> None:
        self.base_url = base_url.rstrip("/")
        self.upstream = Upstream(name, "http", policy, metrics)
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._policy.max_concurrency, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the Upstream deadline governs
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        answers: frozenset[int] = frozenset(),
    ) -> HttpReply:
        """Send one request; 5xx and connection failures are transient, 4xx are answers, and
        so are the 5xx in `answers` when they come as problem+json (the service itself saying
        it cannot do this now, not failing: they neither trip the breaker nor are retried)."""
        session = self._session
        assert session is not None, "HttpUpstream.start() was not awaited"
        url = self.base_url + path
        # Trace context goes out in the headers by the aiohttp client instrumentation.
        outgoing = dict(headers or {})

        async def attempt(_: float) -> HttpReply:
            try:
                async with session.request(
                    method, url, params=params, json=json, headers=outgoing
                ) as response:
                    body = await response.read()
                    received = response.headers
            except aiohttp.ClientError as exc:
                raise TransientFailure(f"{type(exc).__name__}: {exc}") from exc
            if response.status >= 500 and not (
                response.status in answers and response.content_type == PROBLEM_JSON
            ):
                raise TransientFailure(f"HTTP {response.status}")
            return HttpReply(response.status, body, received)

        retry = method.upper() in _IDEMPOTENT if idempotent is None else idempotent
        return await self.upstream.call(operation, attempt, idempotent=retry)

    async def ping(self) -> None:
        """Readiness helper: the upstream's liveness endpoint answers."""
        await self.request("GET", "/healthz", operation="healthz")
