"""Benchmark: what authentication costs at the edge, the cart read path, and sign-in.

    .venv/bin/python bench/auth.py [--seconds 10] [--connections 16]

Starts an embedded NATS, catalog, inventory, identity, cart and the gateway as real processes
on free ports (temporary data; the gateway's rate limits raised, since all load comes from
one client), then measures with wrk (required: `apt-get install wrk`):

1. token verification: the gateway's CPU per request on the same route (GET /api/v1/categories)
   without and with a bearer token, and the verifier alone in this process (cold and warm);
2. the cart read path: GET /api/v1/cart through the gateway (throughput, latency, CPU);
3. sign-in: sequential logins through the gateway (Argon2id), then a login flood while the
   storefront route is measured beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from souq_chassis.auth import TokenVerifier
from souq_chassis.testing import EmbeddedNats, ServiceProcess, free_port

QUIET = {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}
FLOOD_CONNECTIONS, FLOOD_PACE_MS = 32, 100  # up to 320 logins a second, 16x what hashing allows
UNLIMITED = {  # one client sends all the load
    "GATEWAY_CLIENT_RATE_PER_S": "1000000",
    "GATEWAY_CLIENT_BURST": "1000000",
    "GATEWAY_USER_RATE_PER_S": "1000000",
    "GATEWAY_USER_BURST": "1000000",
    "GATEWAY_SIGN_IN_RATE_PER_S": "1000000",
    "GATEWAY_SIGN_IN_BURST": "1000000",
    "GATEWAY_ACCOUNT_SIGN_IN_RATE_PER_S": "1000000",
    "GATEWAY_ACCOUNT_SIGN_IN_BURST": "1000000",
    # identity's own sign-in limits too: the bench measures hashing under a flood, not them.
    "IDENTITY_SIGN_IN_RATE_PER_S": "1000000",
    "IDENTITY_SIGN_IN_BURST": "1000000",
    "IDENTITY_ACCOUNT_SIGN_IN_RATE_PER_S": "1000000",
    "IDENTITY_ACCOUNT_SIGN_IN_BURST": "1000000",
}


# For comparison (--no-hashing-bounds): sign-ins as a naive service takes them, hashing on
# every core at normal priority with a deep queue, and the gateway letting them all through.
NO_HASHING_BOUNDS = {
    "IDENTITY_MAX_CONCURRENT_HASHES": "8",
    "IDENTITY_MAX_WAITING_HASHES": "1000",
    "IDENTITY_HASHING_NICE": "0",
    "GATEWAY_SIGN_IN_CONCURRENCY": "1000",
}


def start_system(
    data_dir: Path, stack: ExitStack, extra: dict[str, str] | None = None
) -> dict[str, ServiceProcess]:
    nats = stack.enter_context(EmbeddedNats(data_dir / "nats"))
    identity_port = free_port()
    jwks = f"http://127.0.0.1:{identity_port}/v1/jwks"
    common = {**QUIET, "SOUQ_BROKER_URL": nats.url, "SOUQ_JWKS_URL": jwks, **(extra or {})}

    def service(module: str, prefix: str, **settings: object) -> ServiceProcess:
        return ServiceProcess.on_free_ports(
            module, prefix, data_dir, env=common, log_level="WARNING", **settings
        )

    catalog = service("souq_catalog", "CATALOG")
    inventory = service("souq_inventory", "INVENTORY")
    identity = ServiceProcess(
        "souq_identity",
        identity_port,
        {
            **common,
            "IDENTITY_HTTP_PORT": str(identity_port),
            "IDENTITY_DATA_DIR": str(data_dir),
            "IDENTITY_LOG_LEVEL": "WARNING",
            **{k: v for k, v in UNLIMITED.items() if k.startswith("IDENTITY_")},
        },
    )
    cart = service("souq_cart", "CART", catalog_target=catalog.grpc_target)
    gateway_port = free_port()
    gateway = ServiceProcess(
        "souq_gateway",
        gateway_port,
        {
            **common,
            **UNLIMITED,
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_HTTP_PORT": str(gateway_port),
            "GATEWAY_CATALOG_URL": catalog.url,
            "GATEWAY_INVENTORY_TARGET": inventory.grpc_target,
            "GATEWAY_INVENTORY_URL": inventory.url,
            "GATEWAY_IDENTITY_URL": identity.url,
            "GATEWAY_CART_URL": cart.url,
        },
    )
    services = {
        "catalog": catalog,
        "inventory": inventory,
        "identity": identity,
        "cart": cart,
        "gateway": gateway,
    }
    for s in services.values():
        stack.enter_context(s)
    return services


def send(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wrk(
    url: str,
    seconds: float,
    connections: int,
    *,
    method: str = "GET",
    body: Any = None,
    token: str | None = None,
    pace_ms: int = 0,
) -> dict[str, Any]:
    """Run wrk; requests, req/s, p50/p99 ms and non-2xx answers. `pace_ms`: each connection
    waits that long between requests (an offered rate, not as fast as answers come)."""
    lua = [f'wrk.method = "{method}"', 'wrk.headers["Content-Type"] = "application/json"']
    if token:
        lua.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if body is not None:
        lua.append(f"wrk.body = [[{json.dumps(body)}]]")
    if pace_ms:
        lua.append(f"delay = function() return {pace_ms} end")
    lua.append(
        "statuses = {}\n"
        "response = function(status) statuses[status] = (statuses[status] or 0) + 1 end\n"
        "done = function() end"
    )
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text("\n".join(lua))
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{int(seconds)}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        script.unlink()

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": total,
        "rps": total / seconds,
        "p50": latency("50"),
        "p99": latency("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def cpu_of(services: dict[str, ServiceProcess]) -> dict[str, float]:
    out = {}
    for name, s in services.items():
        assert s.proc is not None
        t = psutil.Process(s.proc.pid).cpu_times()
        out[name] = t.user + t.system
    return out


def measured(
    services: dict[str, ServiceProcess], url: str, seconds: float, connections: int, **kw: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    """wrk figures and each process's CPU µs per request."""
    wrk(url, 2, connections, **kw)  # warm-up
    before = cpu_of(services)
    result = wrk(url, seconds, connections, **kw)
    after = cpu_of(services)
    per_request = {n: (after[n] - before[n]) / max(result["requests"], 1) * 1e6 for n in services}
    return result, per_request


def line(label: str, r: dict[str, Any], cpu: dict[str, float] | None = None) -> None:
    print(
        f"{label}\n  {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
        f"   non-2xx {r['non2xx']}"
    )
    if cpu:
        print("  CPU per request: " + "   ".join(f"{n} {us:5.0f} µs" for n, us in cpu.items()))


def gateway_dependencies(jwks_url: str, token: str, rounds: int = 20_000) -> tuple[float, float]:
    """CPU µs per request of exactly what differs with a token: the gateway's own per-request
    dependencies (client meter; token parse, verification and user meter) on a request as
    Starlette builds it, without and with an Authorization header."""
    from souq_chassis.ratelimit import RateLimiter
    from souq_gateway.api import Limits, limit_client, optional_caller
    from starlette.requests import Request

    with urllib.request.urlopen(jwks_url, timeout=5) as r:
        document = bytes(r.read())

    async def fetch() -> bytes:
        return document

    unlimited = RateLimiter(1e9, 10**9)
    state = SimpleNamespace(
        limits=Limits(unlimited, unlimited, unlimited, unlimited),
        token_verifier=TokenVerifier(fetch),
    )
    app = SimpleNamespace(state=state)
    base = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]

    def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": "/api/v1/categories",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "app": app,
        }

    async def run() -> tuple[float, float]:
        results = []
        for headers in (base, [*base, (b"authorization", f"Bearer {token}".encode())]):
            await optional_caller(Request(scope(headers)))  # keys fetched, token remembered
            start = time.process_time()
            for _ in range(rounds):
                request = Request(scope(headers))
                await limit_client(request)
                await optional_caller(request)
            results.append((time.process_time() - start) / rounds * 1e6)
        return results[0], results[1]

    return asyncio.run(run())


def verifier_alone(jwks_url: str, token: str, rounds: int = 2000) -> tuple[float, float]:
    """µs per verification in this process: a token never seen (signature checked) and a
    token seen before (remembered until it expires)."""

    with urllib.request.urlopen(jwks_url, timeout=5) as r:
        document = bytes(r.read())

    async def fetch() -> bytes:
        return document

    async def run() -> tuple[float, float]:
        verifier = TokenVerifier(fetch)
        await verifier.verify(token)
        cold = []
        for _ in range(rounds):
            verifier._verified.clear()
            start = time.perf_counter()
            await verifier.verify(token)
            cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(rounds):
            await verifier.verify(token)
        warm = (time.perf_counter() - start) / rounds
        return statistics.median(cold) * 1e6, warm * 1e6

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument(
        "--part", choices=["all", "tokens", "cart", "sign-in"], default="all", help="Only one part."
    )
    parser.add_argument(
        "--trace-sample-ratio",
        type=float,
        default=None,
        help="Head sampling of traces in every service (default: theirs, 1.0).",
    )
    parser.add_argument(
        "--no-hashing-bounds",
        action="store_true",
        help="For comparison: hash on every core at normal priority, queue without bound.",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        extra = dict(NO_HASHING_BOUNDS) if args.no_hashing_bounds else {}
        if args.trace_sample_ratio is not None:
            for prefix in ("CATALOG", "INVENTORY", "IDENTITY", "CART", "GATEWAY"):
                extra[f"{prefix}_TRACE_SAMPLE_RATIO"] = str(args.trace_sample_ratio)
        services = start_system(Path(tmp), stack, extra)
        api = services["gateway"].url + "/api/v1"
        password = "a long bench password"
        assert (
            send("POST", f"{api}/auth/register", {"email": "b@x.io", "password": password})[0]
            == 202
        )
        status, tokens = send(
            "POST", f"{api}/auth/login", {"email": "b@x.io", "password": password}
        )
        assert status == 200, tokens
        token = tokens["access_token"]
        print(
            f"wrk, {args.connections} connections, {args.seconds:.0f}s each, "
            f"{psutil.cpu_count()} cores\n"
        )

        if args.part in ("all", "tokens"):
            verification(services, api, token, args)
        if args.part in ("all", "cart"):
            cart_reads(services, api, token, args)
        if args.part in ("all", "sign-in"):
            sign_in(services, api, password, args)


def verification(
    services: dict[str, ServiceProcess], api: str, token: str, args: argparse.Namespace
) -> None:
    """1. What a bearer token costs the gateway."""
    cold, warm = verifier_alone(services["identity"].url + "/v1/jwks", token)
    print(f"verifier alone: {cold:.0f} µs for a new token, {warm:.1f} µs for a known one")
    without, with_token = gateway_dependencies(services["identity"].url + "/v1/jwks", token)
    print(
        f"the gateway's per-request checks, in process: {without:.1f} µs without a token, "
        f"{with_token:.1f} µs with one → a token adds {with_token - without:.1f} µs of CPU"
    )
    # The same route, alternately without and with a token, twice: the gateway's CPU per
    # request differs by what the token costs (its first verification, then a lookup).
    rounds: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(2):
        for mode in rounds:
            kw = {"token": token} if mode == "with" else {}
            r, cpu = measured(services, f"{api}/categories", args.seconds, args.connections, **kw)
            line(f"GET /api/v1/categories {mode} a bearer token", r, cpu)
            rounds[mode].append(cpu["gateway"])
    without, with_token = statistics.mean(rounds["without"]), statistics.mean(rounds["with"])
    print(
        f"  → gateway CPU per request: {without:.0f} µs without, {with_token:.0f} µs with a "
        f"token; verification adds {with_token - without:.0f} µs\n"
    )


def cart_reads(
    services: dict[str, ServiceProcess], api: str, token: str, args: argparse.Namespace
) -> None:
    """2. The cart read path, three lines in the cart."""
    _, listing = send("GET", f"{api}/products?page_size=3")
    for product in listing["items"]:
        body = {"product_id": product["id"], "quantity": 2}
        assert send("POST", f"{api}/cart/items", body, token)[0] == 201
    cart, cart_cpu = measured(services, f"{api}/cart", args.seconds, args.connections, token=token)
    line("GET /api/v1/cart (3 lines) through the gateway", cart, cart_cpu)
    print()


def sign_in(
    services: dict[str, ServiceProcess], api: str, password: str, args: argparse.Namespace
) -> None:
    """3. Sign-in: sequential logins, then a flood beside the storefront."""
    login = {"email": "b@x.io", "password": password}
    timings = []
    for _ in range(args.logins):
        start = time.perf_counter()
        assert send("POST", f"{api}/auth/login", login)[0] == 200
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    print(
        f"{args.logins} sequential logins: mean {statistics.mean(timings):.0f} ms, "
        f"p50 {timings[len(timings) // 2]:.0f} ms, max {timings[-1]:.0f} ms"
    )
    quiet = wrk(f"{api}/categories", args.seconds, 4)
    line("GET /api/v1/categories, 4 connections, no flood", quiet)
    flooded: list[dict[str, Any]] = []
    flood = threading.Thread(
        target=lambda: flooded.append(
            wrk(
                f"{api}/auth/login",
                args.seconds + 2,
                FLOOD_CONNECTIONS,
                method="POST",
                body=login,
                pace_ms=FLOOD_PACE_MS,
            )
        )
    )
    flood.start()
    time.sleep(1)
    during = wrk(f"{api}/categories", args.seconds, 4)
    flood.join()
    offered = FLOOD_CONNECTIONS * 1000 / FLOOD_PACE_MS
    line(
        f"GET /api/v1/categories, 4 connections, during a login flood (≤{offered:.0f}/s)",
        during,
    )
    line("  the login flood itself (non-2xx: refused while hashing is saturated)", flooded[0])


if __name__ == "__main__":
    main()
