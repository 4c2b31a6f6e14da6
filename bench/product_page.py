"""Benchmark: the product page through the gateway (catalog + inventory) vs. catalog direct.

    .venv/bin/python bench/product_page.py [--seconds 10] [--connections 64]

Starts catalog, inventory and gateway as real processes on free ports (temporary data), then
loads each target for a bounded time from 127.0.0.1 and prints throughput, p50/p99 latency,
and the CPU each process spent per request. The load generator is wrk when it is installed
(`apt-get install wrk`), otherwise an aiohttp loop in this process (which itself costs CPU on
the same cores, so its figures are lower bounds).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families
from souq_chassis.testing import ServiceProcess, free_port

PRODUCT_IDS = list(range(1, 97))
WRK_SCRIPT = """
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("%s%d", "{prefix}", math.random(1, {count})))
end
"""


def start_system(data_dir: Path) -> dict[str, ServiceProcess]:
    catalog = ServiceProcess.on_free_ports("souq_catalog", "CATALOG", data_dir, log_level="WARNING")
    inventory = ServiceProcess.on_free_ports(
        "souq_inventory", "INVENTORY", data_dir, log_level="WARNING"
    )
    gateway_port = free_port()
    gateway = ServiceProcess(
        "souq_gateway",
        gateway_port,
        {
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_HTTP_PORT": str(gateway_port),
            "GATEWAY_CATALOG_URL": catalog.url,
            "GATEWAY_INVENTORY_TARGET": inventory.grpc_target,
            # one client (this machine) sends all the load: no per-client rate limit
            "GATEWAY_CLIENT_RATE_PER_S": "1000000",
            "GATEWAY_CLIENT_BURST": "1000000",
        },
    )
    for service in (catalog, inventory, gateway):
        service.start()
    return {"catalog": catalog, "inventory": inventory, "gateway": gateway}


def cpu_seconds(services: dict[str, ServiceProcess]) -> dict[str, float]:
    out = {}
    for name, service in services.items():
        assert service.proc is not None
        t = psutil.Process(service.proc.pid).cpu_times()
        out[name] = t.user + t.system
    return out


def inventory_calls(gateway: ServiceProcess) -> dict[str, float]:
    """The gateway's own count of its inventory calls by outcome (ok, error, rejected)."""
    with urllib.request.urlopen(gateway.internal_url + "/metrics", timeout=5) as r:
        exposition = r.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "upstream_requests_total" and labels.get("upstream") == "inventory":
                counts[labels["outcome"]] = counts.get(labels["outcome"], 0) + sample.value
    return counts


def run_wrk(prefix: str, seconds: int, connections: int) -> tuple[int, float, float, float, int]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        WRK_SCRIPT.replace("{prefix}", prefix).replace("{count}", str(len(PRODUCT_IDS)))
    )
    base = prefix.split("/", 3)
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"{base[0]}//{base[2]}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    script.unlink()
    text = result.stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        assert m, text
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return (
        total,
        total / seconds,
        latency("50"),
        latency("99"),
        int(errors.group(1)) if errors else 0,
    )


async def run_aiohttp(
    prefix: str, seconds: int, connections: int
) -> tuple[int, float, float, float, int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    rng = random.Random(42)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with http.get(f"{prefix}{rng.choice(PRODUCT_IDS)}") as r:
                await r.read()
                errors += r.status != 200
            latencies.append((time.perf_counter() - start) * 1000)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(connections)))
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return len(latencies), len(latencies) / seconds, q[49], q[98], errors


def load(prefix: str, seconds: int, connections: int) -> tuple[int, float, float, float, int]:
    if shutil.which("wrk"):
        return run_wrk(prefix, seconds, connections)
    return asyncio.run(run_aiohttp(prefix, seconds, connections))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    generator = "wrk" if shutil.which("wrk") else "aiohttp (in-process)"
    with tempfile.TemporaryDirectory() as tmp:
        services = start_system(Path(tmp))
        try:
            targets = {
                "gateway  GET /api/v1/products/{id}": f"{services['gateway'].url}/api/v1/products/",
                "catalog  GET /v1/products/{id} (direct)": (
                    f"{services['catalog'].url}/v1/products/"
                ),
            }
            print(
                f"load: {generator}, {args.connections} connections, {args.seconds}s per target, "
                f"{psutil.cpu_count()} cores\n"
            )
            for label, prefix in targets.items():
                load(prefix, 2, args.connections)  # warm-up
                before, calls_before = cpu_seconds(services), inventory_calls(services["gateway"])
                total, rps, p50, p99, errors = load(prefix, args.seconds, args.connections)
                after, calls_after = cpu_seconds(services), inventory_calls(services["gateway"])
                cpu = {n: (after[n] - before[n]) / max(total, 1) * 1e6 for n in services}
                # A page whose inventory call did not succeed went out degraded ("unknown").
                answered = calls_after.get("ok", 0) - calls_before.get("ok", 0)
                degraded = max(total - int(answered), 0) if label.startswith("gateway") else 0
                print(
                    f"{label}\n  {rps:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
                    f"non-2xx {errors}   degraded (availability unknown) {degraded}"
                )
                print(
                    "  CPU per request: " + "   ".join(f"{n} {us:5.0f} µs" for n, us in cpu.items())
                )
        finally:
            for service in services.values():
                service.stop()


if __name__ == "__main__":
    main()
