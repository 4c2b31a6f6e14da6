"""The gateway's public surface: its documented routes, problem+json errors, request ids, and
nothing else — internal routes of the services behind it are not reachable through it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from souq_chassis.testing import ServiceProcess

API = "/api/v1"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "request_id", "errors"}


async def problem_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The problem+json body of an error response, checked for what every problem carries."""
    assert response.content_type == "application/problem+json", await response.text()
    body: dict[str, Any] = await response.json(content_type="application/problem+json")
    assert body["status"] == response.status
    assert body["title"] == HTTPStatus(response.status).phrase
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert set(body) <= PROBLEM_MEMBERS, body
    return body


async def test_the_openapi_document_lists_the_public_routes_only(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.get(f"{gateway.url}{API}/openapi.json") as response:
        assert response.status == 200
        document = await response.json()

    paths = set(document["paths"])
    assert {f"{API}/products", f"{API}/products/{{product_id}}"} <= paths
    assert all(path.startswith(f"{API}/") for path in paths), paths
    admin = {p for p in paths if "admin" in p or "stock" in p}
    assert admin == {
        f"{API}/admin/products",
        f"{API}/admin/products/{{product_id}}/price",
        f"{API}/admin/stock/{{sku}}/restock",
    }
    assert set(document["paths"][f"{API}/products/{{product_id}}"]) == {"get"}


async def test_the_interactive_docs_are_served_as_html(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.get(f"{gateway.url}{API}/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()

    assert f"{API}/openapi.json" in page
    assert "swagger" in page.lower()


async def test_the_docs_page_loads_only_pinned_assets_checked_by_integrity_hashes(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.get(f"{gateway.url}{API}/docs") as response:
        page = await response.text()
    assets = AssetsOf()
    assets.feed(page)

    assert {tag for tag, _ in assets.found} == {"script", "link"}  # the bundle and its CSS
    for tag, attributes in assets.found:
        url = attributes.get("src") or attributes.get("href") or ""
        assert re.fullmatch(r"https://cdn\.jsdelivr\.net/npm/swagger-ui-dist@\d+\.\d+\.\d+/.+", url)
        assert (attributes.get("integrity") or "").startswith("sha384-"), (tag, attributes)
        assert attributes.get("crossorigin") == "anonymous"


class AssetsOf(HTMLParser):
    """The external scripts and stylesheets of a page (inline ones and data: URLs aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        url = attributes.get("src") or attributes.get("href")
        if tag in ("script", "link", "img", "iframe") and url and not url.startswith("data:"):
            self.found.append((tag, attributes))


async def test_an_unknown_route_is_a_404_problem(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.get(f"{gateway.url}{API}/no-such-thing") as response:
        assert response.status == 404
        await problem_of(response)


async def test_an_unknown_product_is_a_404_problem_naming_it(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.get(f"{gateway.url}{API}/products/987654321") as response:
        assert response.status == 404
        body = await problem_of(response)

    assert "987654321" in body["detail"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/products/abc", {}, "product_id"),
        ("/products/0", {}, "product_id"),
        ("/products", {"page_size": "1000"}, "page_size"),
        ("/products", {"page": "0"}, "page"),
        ("/products", {"category": "BAD!"}, "category"),
        ("/products", {"q": ""}, "q"),
    ],
    ids=["id-not-a-number", "id-zero", "page-size-too-big", "page-zero", "category-bad", "q-empty"],
)
async def test_bad_parameters_are_a_422_problem_naming_the_parameter(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    path: str,
    params: dict[str, str],
    field: str,
) -> None:
    async with http.get(f"{gateway.url}{API}{path}", params=params) as response:
        assert response.status == 422
        body = await problem_of(response)

    assert [error["loc"][-1] for error in body["errors"]] == [field]


async def test_posting_to_the_product_list_is_not_allowed(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.post(f"{gateway.url}{API}/products", json={"sku": "X-1"}) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET"
        await problem_of(response)


async def test_an_oversized_body_is_refused_with_413(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    body = b"x" * (64 * 1024 + 1)
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{gateway.url}{API}/products", data=body, headers=headers) as response:
        assert response.status == 413
        problem = await problem_of(response)

    assert "65536" in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/admin/outbox"),
        ("GET", "/v1/admin/outbox"),
        ("POST", "/v1/admin/products"),
        ("PUT", "/v1/admin/products/1/price"),
        ("GET", "/v1/products"),
        ("GET", "/v1/products/1"),
        ("GET", "/v1/categories"),
        ("GET", f"{API}/stock/KIT-0001"),
        ("GET", "/v1/stock/KIT-0001"),
        ("POST", "/v1/admin/stock/KIT-0001/restock"),
        ("POST", "/souq.inventory.v1.InventoryService/GetAvailability"),
        ("POST", "/souq.catalog.v1.CatalogService/GetProducts"),
        ("POST", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
    ],
)
async def test_internal_routes_are_not_reachable_through_the_gateway(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    catalog: ServiceProcess,
    inventory: ServiceProcess,
    method: str,
    path: str,
) -> None:
    async def served_by(process: ServiceProcess) -> float:
        """Requests a service has served, other than the gateway's readiness checks (which go
        on in the background: read from one scrape, so none falls between two)."""
        async with http.get(process.internal_url + "/metrics") as reply:
            text = await reply.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "grpc_server_requests_total"
            or (
                sample.name == "http_server_requests_total" and sample.labels["route"] != "/healthz"
            )
        )

    before = [await served_by(catalog), await served_by(inventory)]
    headers = {"Content-Type": "application/grpc"} if "Service" in path else {}
    body = b'{"quantity": 5}'
    async with http.request(method, gateway.url + path, data=body, headers=headers) as response:
        assert response.status in (404, 405), await response.text()
        await problem_of(response)
    after = [await served_by(catalog), await served_by(inventory)]

    assert after == before  # nothing reached catalog or inventory


async def test_the_callers_request_id_comes_back_on_a_success(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    headers = {"X-Request-ID": "shopper-7f3a-0001"}
    async with http.get(f"{gateway.url}{API}/products/1", headers=headers) as response:
        assert response.status == 200
        assert response.headers["X-Request-ID"] == "shopper-7f3a-0001"


async def test_the_callers_request_id_is_in_the_error_body(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    headers = {"X-Request-ID": "shopper-7f3a-0002"}
    async with http.get(f"{gateway.url}{API}/products/987654321", headers=headers) as response:
        assert response.status == 404
        assert response.headers["X-Request-ID"] == "shopper-7f3a-0002"
        body = await problem_of(response)

    assert body["request_id"] == "shopper-7f3a-0002"


async def test_a_validation_error_carries_the_callers_request_id(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    headers = {"X-Request-ID": "shopper-7f3a-0003"}
    async with http.get(f"{gateway.url}{API}/products/abc", headers=headers) as response:
        assert response.status == 422
        body = await problem_of(response)

    assert body["request_id"] == "shopper-7f3a-0003"


async def test_without_a_request_id_each_request_gets_a_new_one(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    ids = []
    for _ in range(2):
        async with http.get(f"{gateway.url}{API}/products/987654321") as response:
            ids.append((await problem_of(response))["request_id"])

    assert all(len(i) >= 16 for i in ids)
    assert ids[0] != ids[1]


async def test_an_overlong_request_id_is_replaced(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    overlong = "r" * 129
    async with http.get(
        f"{gateway.url}{API}/products/1", headers={"X-Request-ID": overlong}
    ) as response:
        assert response.status == 200
        given = response.headers["X-Request-ID"]

    assert given and given != overlong


async def test_a_search_catalog_refuses_is_a_422_problem_with_catalogs_reason(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    async with http.get(f"{gateway.url}{API}/products", params={"q": "!!!"}) as response:
        assert response.status == 422
        body = await problem_of(response)

    assert "letter or digit" in body["detail"]
