"""The whole system as a user runs it: `souq up`, through the gateway, with a crash midway."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from souq_chassis.testing import free_port
from souq_cli.services import DEFAULT_PORTS
from souq_cli.state import RunState, alive

SOUQ = str(Path(sys.executable).with_name("souq"))
pytestmark = pytest.mark.e2e


def get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return send("GET", url, headers=headers, timeout=timeout)


def send(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One request; the status and the JSON body (None when there is none)."""
    sent = {"content-type": "application/json", **(headers or {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            raw = r.read()
            return r.status, orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, orjson.loads(raw) if raw else None


def wait_for(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class System:
    def __init__(
        self, data_dir: Path, ports: dict[str, int], proc: subprocess.Popen[bytes], log: Path
    ):
        self.data_dir, self.ports, self.proc, self.log = data_dir, ports, proc, log
        self.gateway = f"http://127.0.0.1:{ports['gateway']}"
        self.api = f"{self.gateway}/api/v1"

    @property
    def admin_password(self) -> str:
        """What the first `souq up` printed, once."""
        found = re.search(r"admin sign-in\s+admin@souq\.local / (\S+)", self.output())
        assert found, self.output()[-2000:]
        return found.group(1)

    def sign_in(self, email: str, password: str) -> dict[str, Any]:
        status, tokens = send(
            "POST", f"{self.api}/auth/login", {"email": email, "password": password}
        )
        assert status == 200, tokens
        return dict(tokens)

    def state(self) -> RunState:
        state = RunState.load(self.data_dir)
        assert state is not None
        return state

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """`souq up` on free ports, once for the module; its tests run in order."""
    tmp_path = tmp_path_factory.mktemp("souq-up")
    ports = {name: free_port() for name in DEFAULT_PORTS}
    data_dir = tmp_path / "data"
    log = tmp_path / "souq-up.log"
    args = [SOUQ, "up", "--data-dir", str(data_dir), *(f"--port={n}={p}" for n, p in ports.items())]
    with log.open("wb") as out:
        env = {k: v for k, v in os.environ.items() if k != "SOUQ_ADMIN_PASSWORD"}
        env["GATEWAY_TRUSTED_PROXIES"] = "127.0.0.1"  # clients told apart by X-Forwarded-For
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            umask=0o000,  # the worst a user may have: Souq's files must be private regardless
        )
    system = System(data_dir, ports, proc, log)
    try:
        wait_for(
            "souq up to be ready",
            lambda: "Souq is up" in system.output() or proc.poll() is not None,
            60,
        )
        assert proc.poll() is None, system.output()[-3000:]
        yield system
    finally:
        pids = [p.pid for p in (RunState.load(data_dir) or RunState(0, {})).services.values()]
        subprocess.run([SOUQ, "down", "--data-dir", str(data_dir)], timeout=60, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pid in pids:
            if alive(pid):
                psutil.Process(pid).kill()
        assert not any(alive(pid) for pid in pids), "services outlived souq down"


def test_people_sign_up_sign_in_and_fill_their_own_carts(system: System) -> None:
    api = system.api
    alice_email, alice_password = f"Alice.{os.urandom(4).hex()}@Example.com", "correct horse 1"
    bob_email, bob_password = f"bob.{os.urandom(4).hex()}@example.com", "battery staple 2"

    status, accepted = send(
        "POST", f"{api}/auth/register", {"email": alice_email, "password": alice_password}
    )
    assert status == 202, accepted
    assert "password" not in str(accepted).lower()
    # Signing up again with her email answers the same: nobody learns who has an account.
    duplicate = {"email": alice_email.upper(), "password": "another one 3"}
    assert send("POST", f"{api}/auth/register", duplicate) == (202, accepted)
    assert send("POST", f"{api}/auth/register", {"email": bob_email, "password": bob_password}) == (
        202,
        accepted,
    )
    wrong = {"email": alice_email, "password": "not her password"}
    assert send("POST", f"{api}/auth/login", wrong)[0] == 401

    login = urllib.request.Request(
        f"{api}/auth/login",
        data=orjson.dumps({"email": alice_email, "password": alice_password}),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(login, timeout=10) as r:
        tokens = orjson.loads(r.read())
        assert r.headers["Cache-Control"] == "no-store"  # tokens are never cached on the way
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    token = tokens["access_token"]
    status, alice = send("GET", f"{api}/me", token=token)
    assert status == 200, alice
    assert alice["email"] == alice_email.lower() and alice["roles"] == ["customer"]
    assert "password" not in str(alice).lower()
    # The duplicate sign-up did not change her password: "another one 3" opens nothing.
    assert send("POST", f"{api}/auth/login", duplicate)[0] == 401

    # Alice fills her cart; names and prices come from catalog.
    _, listing = get(f"{api}/products?page_size=2")
    first, second = listing["items"]
    assert (
        send("POST", f"{api}/cart/items", {"product_id": first["id"], "quantity": 2}, token=token)[
            0
        ]
        == 201
    )
    status, cart = send(
        "POST", f"{api}/cart/items", {"product_id": second["id"], "quantity": 1}, token=token
    )
    assert status == 201, cart
    lines = {line["product_id"]: line for line in cart["items"]}
    assert lines[first["id"]]["name"] == first["name"]
    assert lines[first["id"]]["unit_price"] == first["price"]
    assert lines[first["id"]]["quantity"] == 2
    assert cart["item_count"] == 3
    expected = 2 * first["price"]["amount_cents"] + second["price"]["amount_cents"]
    assert cart["totals"] == [{"amount_cents": expected, "currency": "USD"}]
    status, changed = send(
        "PATCH", f"{api}/cart/items/{second['id']}", {"quantity": 4}, token=token
    )
    assert status == 200 and changed["item_count"] == 6
    unknown = {"product_id": 10**9, "quantity": 1}
    assert send("POST", f"{api}/cart/items", unknown, token=token)[0] == 422

    # Bob sees only his own (empty) cart and cannot touch hers.
    bob = system.sign_in(bob_email, bob_password)
    assert send("GET", f"{api}/cart", token=bob["access_token"]) == (
        200,
        {"items": [], "totals": [], "item_count": 0},
    )
    assert send("DELETE", f"{api}/cart/items/{first['id']}", token=bob["access_token"])[0] == 404
    assert send("GET", f"{api}/cart", token=token)[1]["item_count"] == 6

    # Without a token, or with a forged one, nobody gets in, through the gateway or around it.
    cart_service = f"http://127.0.0.1:{system.ports['cart']}/v1/cart"
    head, payload, signature = token.split(".")
    for forged in (None, f"{head}.{payload}.{signature[::-1]}", f"{head}.{payload}."):
        assert send("GET", f"{api}/cart", token=forged)[0] == 401
        assert send("GET", cart_service, token=forged, headers={"X-User-Id": alice["id"]})[0] == 401

    # An admin changes a price: the cart shows it once the event arrives.
    admin = system.sign_in("admin@souq.local", system.admin_password)["access_token"]
    new_price = {"amount_cents": first["price"]["amount_cents"] + 500, "currency": "USD"}
    customer_try = send("PUT", f"{api}/admin/products/{first['id']}/price", new_price, token=token)
    assert customer_try[0] == 403
    status, _ = send("PUT", f"{api}/admin/products/{first['id']}/price", new_price, token=admin)
    assert status == 200

    def repriced() -> bool:
        _, now = send("GET", f"{api}/cart", token=token)
        return any(
            line["product_id"] == first["id"] and line["unit_price"] == new_price
            for line in now["items"]
        )

    wait_for("the cart to show the new price", repriced, 15)

    # Refresh tokens rotate; a reused one revokes its whole family.
    status, rotated = send(
        "POST", f"{api}/auth/refresh", {"refresh_token": tokens["refresh_token"]}
    )
    assert status == 200 and rotated["refresh_token"] != tokens["refresh_token"]
    assert send("POST", f"{api}/auth/refresh", {"refresh_token": tokens["refresh_token"]})[0] == 401
    assert (
        send("POST", f"{api}/auth/refresh", {"refresh_token": rotated["refresh_token"]})[0] == 401
    )

    # Logging out ends Bob's refresh tokens.
    assert send("POST", f"{api}/auth/logout", token=bob["access_token"])[0] == 204
    assert send("POST", f"{api}/auth/refresh", {"refresh_token": bob["refresh_token"]})[0] == 401

    # Clearing empties the cart.
    assert send("DELETE", f"{api}/cart", token=token)[0] == 204
    assert send("GET", f"{api}/cart", token=token)[1]["items"] == []

    # No password or refresh token was written to any log; the admin's was printed once.
    service_logs = (system.data_dir / "logs" / "souq.log").read_text()
    printed = system.output()
    for secret in (alice_password, bob_password, tokens["refresh_token"], rotated["refresh_token"]):
        assert secret not in service_logs and secret not in printed
    assert system.admin_password not in service_logs
    assert printed.count(system.admin_password) == 1


def test_failed_sign_ins_from_one_address_do_not_lock_a_user_out_from_another(
    system: System,
) -> None:
    """Both the gateway and identity limit sign-in per account and client; identity sees every
    client as the gateway unless the gateway vouches for the real one (souq up gives them a
    shared secret), or an attacker's wrong guesses would lock the victim out everywhere. The
    clients are told apart by X-Forwarded-For, which this system's gateway believes from
    127.0.0.1 (GATEWAY_TRUSTED_PROXIES), as behind a reverse proxy."""
    email, password = f"victim.{os.urandom(4).hex()}@example.com", "the victim's passphrase"
    attacker, victim = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.20"}
    login = f"{system.api}/auth/login"
    registered = {"email": email, "password": password}
    assert send("POST", f"{system.api}/auth/register", registered, headers=victim)[0] == 202
    guesses = [
        send("POST", login, {"email": email, "password": f"guess {i}"}, headers=attacker)[0]
        for i in range(6)
    ]
    assert guesses[:5] == [401] * 5 and guesses[5] == 429, guesses
    status, tokens = send("POST", login, registered, headers=victim)
    assert status == 200, tokens


def test_the_system_serves_products_survives_an_inventory_crash_and_recovers(
    system: System,
) -> None:
    status, listing = get(f"{system.gateway}/api/v1/products?page_size=50")
    assert status == 200
    assert listing["total"] >= 60
    categories = {p["category"] for p in listing["items"]}
    assert len(categories) >= 4
    assert all(p["availability"] != "unknown" for p in listing["items"])
    in_stock = next(p for p in listing["items"] if p["availability"] == "in_stock")
    product_url = f"{system.gateway}/api/v1/products/{in_stock['id']}"

    # One trace crosses all three processes: the caller's W3C trace id is in each one's logs.
    trace_id = os.urandom(16).hex()
    traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    status, _ = get(
        f"{system.gateway}/api/v1/products?q=copper", headers={"traceparent": traceparent}
    )
    assert status == 200

    def services_that_logged_the_trace() -> bool:
        lines = (system.data_dir / "logs" / "souq.log").read_text().splitlines()
        names = {line.split(" |")[0].strip() for line in lines if trace_id in line}
        return names >= {"gateway", "catalog", "inventory"}

    wait_for("the trace id in every service's logs", services_that_logged_the_trace, 10)

    # Each service's database file is open in that service's process alone.
    state = system.state()
    for db in system.data_dir.glob("*.db"):
        holders = {
            name
            for name, svc in state.services.items()
            if any(Path(f.path) == db for f in psutil.Process(svc.pid).open_files())
        }
        assert holders == {db.stem}, (db.name, holders)

    # An event crosses the broker: a product created in catalog gets a stock record in
    # inventory, with nothing shared between them but the event's contract.
    new = {
        "sku": "E2E-0001",
        "name": "Hand-carved Cedar Box",
        "category": "home-decor",
        "price": {"amount_cents": 3900, "currency": "USD"},
    }
    admin = system.sign_in("admin@souq.local", system.admin_password)["access_token"]
    status, created = send("POST", f"{system.api}/admin/products", new, token=admin)
    assert status == 201, created
    inventory = f"http://127.0.0.1:{system.ports['inventory']}"
    bearer = {"Authorization": f"Bearer {admin}"}  # stock levels are for administrators

    def tracked() -> Any:
        code, body = get(f"{inventory}/v1/stock/E2E-0001", headers=bearer)
        return body if code == 200 else None

    assert wait_for("inventory to track the new SKU", tracked, 15)["on_hand"] == 0
    status, page = get(f"{system.gateway}/api/v1/products/{created['id']}")
    assert (status, page["availability"]) == (200, "out_of_stock")

    def souq(*args: str) -> subprocess.CompletedProcess[str]:
        command = [SOUQ, *args, "--data-dir", str(system.data_dir)]
        wide = {**os.environ, "COLUMNS": "250"}  # tables unabridged, whatever the terminal
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=wide)

    events = souq("events", "--admin-password", system.admin_password)
    assert events.returncode == 0, events.stdout + events.stderr
    assert "SOUQ_EVENTS" in events.stdout and "catalog outbox: 0 unpublished" in events.stdout
    assert "catalog.ProductCreated.v1" in events.stdout  # just published: in the outbox history
    dead = souq("dlq", "list")
    assert (dead.returncode, dead.stdout.strip()) == (0, "No dead letters.")
    assert souq("dlq", "replay", "no-such-id").returncode == 1

    inventory_pid = state.services["inventory"].pid
    assert inventory_pid
    psutil.Process(inventory_pid).send_signal(signal.SIGKILL)

    started = time.perf_counter()
    status, product = get(product_url)
    elapsed = time.perf_counter() - started
    assert status == 200
    assert product["availability"] == "unknown" and product["available_quantity"] is None
    assert product["price"] == in_stock["price"]
    assert elapsed < 1.0, f"degraded answer took {elapsed:.2f}s"

    def restarted() -> bool:
        svc = system.state().services["inventory"]
        return svc.restarts >= 1 and svc.state == "ready" and svc.pid != inventory_pid

    wait_for("the runner to restart inventory", restarted, 30)

    def recovered() -> dict[str, Any] | None:
        code, body = get(product_url)
        return body if code == 200 and body["availability"] != "unknown" else None

    back = wait_for("availability to come back", recovered, 30)
    assert back["available_quantity"] == in_stock["available_quantity"]

    status_out = subprocess.run(
        [SOUQ, "status", "--data-dir", str(system.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status_out.returncode == 0, status_out.stdout + status_out.stderr
    for name in ("catalog", "inventory", "gateway"):
        assert name in status_out.stdout
    assert "inventory" in system.output() and "restarting" in system.output()


def nats_handshake(port: int, credentials: dict[str, str]) -> str:
    """The embedded NATS's answer to CONNECT (these credentials) and PING, in its protocol."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        connect = {"verbose": False, "pedantic": False, "protocol": 1, **credentials}
        sock.sendall(b"CONNECT " + orjson.dumps(connect) + b"\r\nPING\r\n")
        return reader.readline().decode().strip()


def test_the_data_is_private_and_the_broker_admits_only_souqs_own(system: System) -> None:
    # Every directory and file souq up and its services made (databases and their journals,
    # logs, state, the broker's store, config and credentials): nobody else's to read,
    # although souq up ran with umask 000. (Root reads anything: the test checks the modes.)
    opened = [
        f"{path.relative_to(system.data_dir)} {stat.S_IMODE(path.lstat().st_mode):04o}"
        for path in [system.data_dir, *system.data_dir.rglob("*")]
        if stat.S_IMODE(path.lstat().st_mode) & 0o077
    ]
    assert opened == []
    names = {p.name for p in system.data_dir.rglob("*")}
    assert {"identity.db", "identity.db-wal", "souq.log", "nats-users.json", "jetstream"} <= names

    # A local process without the data directory's credentials cannot use the broker.
    port = system.ports["nats"]
    assert "Authorization Violation" in nats_handshake(port, {})
    assert "Authorization Violation" in nats_handshake(port, {"user": "catalog", "pass": "x"})
    passwords = orjson.loads((system.data_dir / "nats-users.json").read_bytes())
    assert nats_handshake(port, {"user": "catalog", "pass": passwords["catalog"]}) == "PONG"
    # No monitoring port is left open to anyone: NATS listens on its client port alone.
    nats_pid = system.state().services["nats"].pid
    assert nats_pid
    listening = {
        c.laddr.port
        for c in psutil.Process(nats_pid).net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {port}

    # The broker's passwords are in no log and not in what souq up printed.
    logs = (system.data_dir / "logs" / "souq.log").read_text() + system.output()
    assert not [user for user, password in passwords.items() if password in logs]
