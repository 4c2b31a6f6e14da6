"""Rate limits as token buckets, and their 429 problem with `Retry-After`.

One definition for every service that meters something (the gateway per client and user,
a service defending its own port); which keys and which limits is the service's business.
"""

from __future__ import annotations

import ipaddress
import math

from fastapi import Request
from starlette.responses import Response

from souq_chassis.problems import problem, request_id_of


class RateLimiter:
    """Token buckets by key (a client IP, a user id): `rate_per_s` tokens refill each second up
    to `burst`; a request takes one. At most `max_keys` buckets are kept: when full, the oldest
    is forgotten (a forgotten client starts again with a full bucket). In memory, so per
    process."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """Take a token: 0.0 if the request may go on, else the seconds until one is free."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            wait, tokens = 0.0, tokens - 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        if len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)  # re-inserted: the dict is oldest-first
        return wait


def client_key(address: str) -> str:
    """The key under which a client address is metered. Every address of the loopback network
    (127.0.0.0/8, ::1) is one local client: any local process may pick its source address among
    16 million, so metering them apart would let it dodge every limit. An IPv6 client is its
    /64 (what one host is usually given); an IPv4-mapped IPv6 address is the IPv4 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimited(Exception):
    """Refused by a rate limit; `retry_after` is in whole seconds, at least 1."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.retry_after = max(1, math.ceil(wait_s))


async def rate_limited_problem(request: Request, exc: Exception) -> Response:
    """Exception handler: RateLimited as a 429 problem with Retry-After."""
    assert isinstance(exc, RateLimited)
    return problem(
        429,
        f"Too many requests; try again in {exc.retry_after} s.",
        request_id=request_id_of(request),
        headers={"Retry-After": str(exc.retry_after)},
    )
