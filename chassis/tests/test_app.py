"""The app factory over a real HTTP server: problems, request ids, body limits, health, metrics."""

from __future__ import annotations

import aiohttp
import orjson
from fastapi import FastAPI
from pydantic import BaseModel
from souq_chassis.app import create_app
from souq_chassis.metrics import Metrics
from souq_chassis.testing import serving, serving_listeners


class Item(BaseModel):
    name: str
    quantity: int


def build(metrics: Metrics, *, ready: bool = True) -> FastAPI:
    async def database() -> None:
        if not ready:
            raise ConnectionError("database unreachable")

    app = create_app(
        title="test",
        version="1.2.3",
        metrics=metrics,
        readiness={"database": database},
        max_body_bytes=1024,
    )

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> Item:
        return Item(name=f"item {item_id}", quantity=item_id)

    @app.post("/items")
    async def add_item(item: Item) -> Item:
        return item

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return app


async def test_errors_are_problem_json_with_the_request_id() -> None:
    async with serving(build(Metrics())) as url, aiohttp.ClientSession() as http:
        cases = [
            ("GET", "/nowhere", None, 404),
            ("GET", "/items/abc", None, 422),
            ("POST", "/items", b'{"name": 1}', 422),
            ("POST", "/items", b"{not json", 422),
            ("DELETE", "/items/1", None, 405),
            ("GET", "/boom", None, 500),
        ]
        for method, path, body, status in cases:
            headers = {"content-type": "application/json", "x-request-id": f"req-{status}"}
            async with http.request(method, url + path, data=body, headers=headers) as r:
                text = await r.text()
                assert r.status == status, (path, text)
                assert r.headers["content-type"] == "application/problem+json", path
                problem = orjson.loads(text)
                assert problem["status"] == status and problem["title"]
                assert problem["request_id"] == f"req-{status}"
                assert "Traceback" not in text and "secret internals" not in text


async def test_a_request_id_is_made_when_the_caller_sends_none() -> None:
    async with serving(build(Metrics())) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/items/7") as r:
            assert r.status == 200
            assert await r.json() == {"name": "item 7", "quantity": 7}
            assert len(r.headers["x-request-id"]) == 32


async def test_oversized_bodies_are_refused_whether_announced_or_streamed() -> None:
    big = orjson.dumps({"name": "x" * 5000, "quantity": 1})

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    async with serving(build(Metrics())) as url, aiohttp.ClientSession() as http:
        headers = {"content-type": "application/json"}
        async with http.post(url + "/items", data=big, headers=headers) as r:
            assert r.status == 413
            assert (await r.json(content_type=None))["status"] == 413
        async with http.post(url + "/items", data=chunks(), headers=headers) as r:
            assert r.status == 413
            assert r.headers["content-type"] == "application/problem+json"


async def test_health_is_alive_and_readiness_reflects_dependencies() -> None:
    async with aiohttp.ClientSession() as http:
        async with serving_listeners(build(Metrics(), ready=True)) as (url, internal):
            async with http.get(url + "/healthz") as r:
                assert r.status == 200
            async with http.get(url + "/readyz") as r:
                assert r.status == 200
                assert await r.json() == {"status": "ready"}
            async with http.get(internal + "/readyz") as r:
                assert r.status == 200
                assert (await r.json())["checks"] == {"database": "ok"}
        async with serving_listeners(build(Metrics(), ready=False)) as (url, internal):
            async with http.get(url + "/healthz") as r:
                assert r.status == 200
            async with http.get(internal + "/readyz") as r:
                assert r.status == 503
                body = await r.json(content_type=None)
                assert "database unreachable" in body["checks"]["database"]


async def test_the_public_port_tells_readiness_as_a_status_only_and_serves_no_metrics() -> None:
    async with (
        serving_listeners(build(Metrics(), ready=False)) as (url, internal),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(url + "/readyz") as r:
            assert r.status == 503
            body = await r.json(content_type=None)
        assert "checks" not in body and "database" not in orjson.dumps(body).decode()
        async with http.get(url + "/metrics") as r:
            assert r.status == 404
        async with http.get(internal + "/metrics") as r:
            assert r.status == 200
            assert "http_server_requests_total" in await r.text()


async def test_readiness_is_checked_in_the_background_not_per_request() -> None:
    calls = 0

    async def dependency() -> None:
        nonlocal calls
        calls += 1

    app = create_app(
        title="test",
        version="1",
        metrics=Metrics(),
        readiness={"dependency": dependency},
        readiness_interval_s=60,
    )
    async with serving_listeners(app) as (url, internal), aiohttp.ClientSession() as http:
        checked_at_start = calls
        for _ in range(50):
            async with http.get(url + "/readyz") as r:
                assert r.status == 200
            async with http.get(internal + "/readyz") as r:
                assert r.status == 200
    assert checked_at_start == calls == 1


async def test_metrics_count_requests_by_route_template_and_status() -> None:
    metrics = Metrics()
    async with (
        serving_listeners(build(metrics)) as (url, internal),
        aiohttp.ClientSession() as http,
    ):
        for item in (1, 2, 3):
            async with http.get(f"{url}/items/{item}") as r:
                assert r.status == 200
        async with http.get(url + "/items/x") as r:
            assert r.status == 422
        async with http.get(internal + "/metrics") as r:
            exposition = await r.text()
    ok = {"method": "GET", "route": "/items/{item_id}", "status": "200"}
    bad = {**ok, "status": "422"}
    assert metrics.registry.get_sample_value("http_server_requests_total", ok) == 3
    assert metrics.registry.get_sample_value("http_server_requests_total", bad) == 1
    assert 'route="/items/{item_id}"' in exposition
    assert "http_server_request_duration_seconds_bucket" in exposition
