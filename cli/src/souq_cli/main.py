"""`souq`: run the whole system locally. `souq up`, `souq status`, `souq down`, `souq logs`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import psutil
import typer
from rich.console import Console
from rich.table import Table
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.messaging.broker import Broker, open_broker

from souq_cli.services import DEFAULT_PORTS, broker_url, external_broker, services
from souq_cli.state import RunState, alive
from souq_cli.supervisor import Supervisor

app = typer.Typer(
    help="Run Souq locally: every service its own process, no Docker.", no_args_is_help=True
)
console = Console()
T = TypeVar("T")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="SOUQ_DATA_DIR",
        help="Where databases, logs and the run state live.",
        file_okay=False,
    ),
]
DEFAULT_DATA_DIR = Path(".souq")
ADMIN_EMAIL = "admin@souq.local"  # identity's default IDENTITY_ADMIN_EMAIL
AdminPassword = Annotated[
    str,
    typer.Option(
        "--admin-password",
        envvar="SOUQ_ADMIN_PASSWORD",
        help=f"The password of {ADMIN_EMAIL} (never stored by Souq).",
        show_default=False,
    ),
]


def _parse_ports(overrides: list[str]) -> dict[str, int]:
    ports = dict(DEFAULT_PORTS)
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in ports or not value.isdigit() or not 0 < int(value) < 65536:
            raise typer.BadParameter(
                f"{item!r}: expected NAME=PORT with NAME one of {', '.join(ports)}",
                param_hint="--port",
            )
        ports[name] = int(value)
    return ports


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@app.command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    port: Annotated[
        list[str] | None,
        typer.Option(
            "--port", help="Override a port: NAME=PORT (gateway, catalog, catalog-grpc, ...)."
        ),
    ] = None,
    admin_password: AdminPassword = "",
) -> None:
    """Start every service, wait until all are ready, stream their logs; Ctrl-C stops them all.

    The first run seeds an administrator, admin@souq.local: with SOUQ_ADMIN_PASSWORD's password
    if set, else with a random one printed once (it is stored nowhere but as a hash)."""
    data_dir = data_dir.resolve()
    ports = _parse_ports(port or [])
    previous = RunState.load(data_dir)
    if previous and previous.supervisor_alive():
        console.print(
            f"[red]Souq is already running from {data_dir} (pid {previous.supervisor_pid}).[/]"
        )
        raise typer.Exit(1)
    used = {n: p for n, p in ports.items() if not (external_broker() and n.startswith("nats"))}
    taken = [f"{name} {p}" for name, p in used.items() if _port_taken(p)]
    if taken:
        console.print(
            f"[red]Ports in use: {', '.join(taken)}. Free them or pass --port NAME=PORT.[/]"
        )
        raise typer.Exit(1)
    if admin_password and not 8 <= len(admin_password) <= 128:
        console.print("[red]SOUQ_ADMIN_PASSWORD must be 8 to 128 characters long.[/]")
        raise typer.Exit(2)
    # A first run makes identity's database under the data dir (with IDENTITY_DATABASE_URL
    # elsewhere, the CLI cannot tell: then only SOUQ_ADMIN_PASSWORD seeds an admin).
    first_run = (
        not os.environ.get("IDENTITY_DATABASE_URL") and not (data_dir / "identity.db").exists()
    )
    shown_password = ""
    if not admin_password and first_run:
        admin_password = shown_password = secrets.token_urlsafe(12)
    identity_env = {"IDENTITY_ADMIN_EMAIL": ADMIN_EMAIL}
    if admin_password:
        identity_env["IDENTITY_ADMIN_PASSWORD"] = admin_password
    supervisor = Supervisor(data_dir, ports, secrets={"identity": identity_env})

    def announce(seconds: float) -> None:
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        lines = [
            f"[bold green]Souq is up[/] in {seconds:.1f}s (data in {data_dir})",
            f"  storefront API   {gateway}/api/v1/products",
            f"  API docs         {gateway}/api/v1/docs",
        ]
        lines += [
            f"  {s.name:<16} {s.http_url(ports)}  (metrics at {s.internal_url(ports)}/metrics)"
            for s in services()
            if s.module
        ]
        lines.append(f"  broker           {broker_url(ports)}")
        if shown_password:
            lines.append(
                f"  [bold]admin sign-in    {ADMIN_EMAIL} / {shown_password}[/]"
                "  (shown this once; or choose it with SOUQ_ADMIN_PASSWORD on a first run)"
            )
        lines.append(
            "  Ctrl-C stops everything; `souq status` in another terminal shows the processes."
        )
        console.print("\n".join(lines))

    try:
        import uvloop

        uvloop.run(supervisor.run(announce))
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(supervisor.run(announce))
    console.print("[bold]Souq stopped.[/]")


@app.command()
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """A table of the services: pid, port, state, restarts, memory."""
    state = RunState.load(data_dir.resolve())
    if state is None or not state.supervisor_alive():
        console.print("Souq is not running.")
        raise typer.Exit(3)
    table = Table(title=f"Souq (supervisor pid {state.supervisor_pid})")
    for column in ("service", "pid", "port", "internal", "state", "restarts", "memory"):
        table.add_column(
            column, justify="right" if column in {"pid", "restarts", "memory"} else "left"
        )
    for name, svc in state.services.items():
        memory = "-"
        if alive(svc.pid):
            memory = f"{psutil.Process(svc.pid).memory_info().rss / 2**20:.0f} MiB"
        port = svc.url.rsplit(":", 1)[-1]
        internal = str(state.ports.get(f"{name}-internal", "-"))
        table.add_row(
            name, str(svc.pid or "-"), port, internal, svc.state, str(svc.restarts), memory
        )
    console.print(table)


@app.command()
def down(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait before killing.")] = 20.0,
) -> None:
    """Stop a running system (the `souq up` of this data directory) and all its services."""
    state = RunState.load(data_dir.resolve())
    if state is None or not state.supervisor_alive():
        console.print("Souq is not running.")
        return
    os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pids = [state.supervisor_pid, *(s.pid for s in state.services.values() if s.pid)]
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    console.print("Souq stopped.")


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="Only this service's lines.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    lines: Annotated[int, typer.Option("-n", help="How many lines.")] = 50,
) -> None:
    """The last log lines of every service (or one), from the data directory."""
    path = data_dir.resolve() / "logs" / "souq.log"
    if not path.exists():
        console.print(f"No logs in {path.parent}.")
        raise typer.Exit(1)
    wanted = [
        line
        for line in path.read_text().splitlines()
        if service is None or line.startswith(f"{service} |")
    ]
    sys.stdout.write("\n".join(wanted[-lines:]) + "\n")


dlq = typer.Typer(help="Dead letters: messages a consumer gave up on.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


def _broker_of(data_dir: Path) -> str:
    state = RunState.load(data_dir.resolve())
    return (state.broker_url if state else "") or broker_url(DEFAULT_PORTS)


async def _with_broker(url: str, work: Callable[[Broker], Awaitable[T]]) -> T:
    broker = open_broker(url, client_name="souq-cli")
    try:
        await asyncio.wait_for(broker.connect(), 5)
    except TimeoutError:
        console.print(f"[red]The broker at {url} does not answer.[/]")
        raise typer.Exit(1) from None
    try:
        return await work(broker)
    finally:
        await broker.close()


def _admin_token(state: RunState | None, password: str) -> str | None:
    """An administrator's access token from identity, or None (no password, or refused)."""
    identity = state.services.get("identity") if state else None
    if identity is None or not password:
        return None
    body = json.dumps({"email": ADMIN_EMAIL, "password": password}).encode()
    request = urllib.request.Request(
        f"{identity.url}/v1/login", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            token: str = json.loads(r.read())["access_token"]
    except (OSError, ValueError, KeyError):
        return None
    return token


@app.command()
def events(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    limit: Annotated[int, typer.Option(help="Recent messages per service.")] = 10,
    admin_password: AdminPassword = "",
) -> None:
    """Messages per stream or queue, and (signed in as the administrator) each service's
    outbox backlog and recent messages."""
    url = _broker_of(data_dir)
    destinations = asyncio.run(_with_broker(url, lambda b: b.destinations(list(SUBSCRIPTIONS))))
    table = Table(title=f"Broker {url}")
    for column in ("stream / queue", "messages", "what"):
        table.add_column(column, justify="right" if column == "messages" else "left")
    for d in destinations:
        table.add_row(d.name, str(d.messages), d.detail)
    console.print(table)
    state = RunState.load(data_dir.resolve())
    token = _admin_token(state, admin_password)
    if token is None:
        console.print(
            "Outboxes are for the administrator: set SOUQ_ADMIN_PASSWORD (or --admin-password)."
            if not admin_password
            else "Signing in as the administrator failed (wrong password, or identity is away)."
        )
        return
    for name, svc in (state.services if state else {}).items():
        request = urllib.request.Request(
            f"{svc.url}/v1/admin/outbox?limit={limit}", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                outbox = json.loads(r.read())
        except (OSError, ValueError):
            continue  # no outbox there, or not running
        recent = Table(
            title=f"{name} outbox: {outbox['backlog']} unpublished "
            f"(oldest {outbox['oldest_age_s']}s)"
        )
        for column in ("id", "type", "created", "published"):
            recent.add_column(column)
        for m in outbox["recent"]:
            recent.add_row(m["id"], m["type"], str(m["created_at"]), str(m["published_at"] or "-"))
        console.print(recent)


@dlq.command("list")
def dlq_list(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """Dead-lettered messages with their error and attempt count."""
    url = _broker_of(data_dir)
    letters = asyncio.run(_with_broker(url, lambda b: b.dead_letters(list(SUBSCRIPTIONS), limit)))
    if not letters:
        console.print("No dead letters.")
        return
    table = Table(title=f"Dead letters on {url}")
    for column in ("id", "type", "consumer", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for d in letters:
        table.add_row(d.id, d.type, d.consumer, str(d.attempts), d.error)
    console.print(table)


@dlq.command("replay")
def dlq_replay(
    message_id: Annotated[str, typer.Argument(help="The id `souq dlq list` shows.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Deliver a dead letter again (its consumers' inboxes keep it to one effect each)."""
    url = _broker_of(data_dir)
    found = asyncio.run(_with_broker(url, lambda b: b.replay(list(SUBSCRIPTIONS), message_id)))
    if not found:
        console.print(f"[red]No dead letter {message_id}.[/]")
        raise typer.Exit(1)
    console.print(f"Replayed {message_id}.")


if __name__ == "__main__":
    app()
