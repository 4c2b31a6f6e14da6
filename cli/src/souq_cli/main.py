"""`souq`: run the whole system locally. `souq up`, `souq status`, `souq down`, `souq logs`."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import shlex
import socket
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import psutil
import typer
from rich.console import Console
from rich.table import Table
from souq.events.topology import SUBSCRIPTIONS, publications
from souq_chassis.messaging.broker import Broker, open_broker
from souq_chassis.messaging.nats_broker import without_credentials
from souq_chassis.messaging.rabbit_access import rabbitmqctl_commands, service_access

from souq_cli import broker_users
from souq_cli.services import DEFAULT_PORTS, broker_url, external_broker, services
from souq_cli.state import RunState, alive
from souq_cli.supervisor import Failure, Supervisor

app = typer.Typer(
    help="Run Souq locally: every service its own process, no Docker.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)
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
    if previous and previous.supervisor() is not None:
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
    if supervisor.failure is not None:
        _report(supervisor.failure)
        raise typer.Exit(1)
    console.print("[bold]Souq stopped.[/]")


def _report(failure: Failure) -> None:
    """Why `souq up` gave up: the service, and the last lines it printed."""
    errors.print(
        f"[bold red]Souq stopped: {failure.service} could not start[/] (it exited with status "
        f"{failure.exit_code}, {failure.attempts} times in a row). Its last lines:",
        soft_wrap=True,
    )
    for line in failure.last_lines or ["(nothing)"]:
        errors.print(
            f"  {failure.service} | {line}",
            markup=False,
            emoji=False,
            highlight=False,
            soft_wrap=True,
        )


_RUNNING = {"starting", "ready"}


def _stale_supervisor(state: RunState) -> str:
    """A note when the state file's supervisor pid now belongs to another process."""
    if alive(state.supervisor_pid):
        return f" (pid {state.supervisor_pid} in its state file is another process now)"
    return ""


@app.command()
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """A table of the services: pid, port, state, restarts, memory.

    A pid whose process is no longer the one `souq up` started (same start time and command
    line) shows as stale."""
    state = RunState.load(data_dir.resolve())
    if state is None or state.supervisor() is None:
        note = _stale_supervisor(state) if state is not None else ""
        console.print(f"Souq is not running{note}.")
        raise typer.Exit(3)
    table = Table(title=f"Souq (supervisor pid {state.supervisor_pid})")
    for column in ("service", "pid", "port", "internal", "state", "restarts", "memory"):
        table.add_column(
            column, justify="right" if column in {"pid", "restarts", "memory"} else "left"
        )
    for name, svc in state.services.items():
        shown, memory = svc.state, "-"
        process = svc.process()
        if process is not None:
            with contextlib.suppress(psutil.Error):
                memory = f"{process.memory_info().rss / 2**20:.0f} MiB"
        elif svc.state in _RUNNING:
            shown = "stale (pid reused)" if alive(svc.pid) else "not running"
        port = svc.url.rsplit(":", 1)[-1]
        internal = str(state.ports.get(f"{name}-internal", "-"))
        table.add_row(name, str(svc.pid or "-"), port, internal, shown, str(svc.restarts), memory)
    console.print(table)


def _souqs_own(state: RunState) -> dict[str, psutil.Process]:
    """The services' processes that are still the ones `souq up` started; says which are not."""
    own: dict[str, psutil.Process] = {}
    for name, svc in state.services.items():
        process = svc.process()
        if process is not None:
            own[name] = process
        elif alive(svc.pid):
            console.print(
                f"{name}: pid {svc.pid} is not the process Souq started any more; left alone."
            )
    return own


def _stop(processes: list[psutil.Process], timeout: float) -> None:
    """Wait up to `timeout` for them to end, then kill what is left (each still Souq's:
    psutil refuses to signal a Process object whose pid has been reused)."""
    _, left = psutil.wait_procs(processes, timeout=timeout)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


@app.command()
def down(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait before killing.")] = 20.0,
) -> None:
    """Stop a running system (the `souq up` of this data directory) and all its services.

    Only processes that are still the ones `souq up` started are signalled: after a power cut
    or a reboot, the pids in a stale state file may belong to anyone."""
    data_dir = data_dir.resolve()
    state = RunState.load(data_dir)
    if state is None:
        console.print("Souq is not running.")
        return
    supervisor = state.supervisor()
    services = _souqs_own(state)
    if supervisor is not None:
        # It stops its services itself, in order, each draining.
        with contextlib.suppress(psutil.NoSuchProcess):
            supervisor.terminate()
        _stop([supervisor, *services.values()], timeout)
        console.print("Souq stopped.")
        return
    if alive(state.supervisor_pid):
        console.print(
            f"supervisor: pid {state.supervisor_pid} is not the `souq up` that wrote the state "
            "file any more; left alone."
        )
    for process in services.values():  # outlived a supervisor that was killed
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _stop(list(services.values()), timeout)
    RunState.remove(data_dir)
    console.print(
        "Souq is not running; stopped what was left and removed the stale state file."
        if services
        else "Souq is not running; removed the stale state file."
    )


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
    """The broker of this data directory's run; the embedded NATS signed in as administrator."""
    state = RunState.load(data_dir.resolve())
    url = (state.broker_url if state else "") or broker_url(DEFAULT_PORTS)
    return broker_users.as_admin(url, data_dir.resolve())


async def _with_broker(url: str, work: Callable[[Broker], Awaitable[T]]) -> T:
    broker = open_broker(url, client_name="souq-cli")
    try:
        await asyncio.wait_for(broker.connect(), 5)
    except TimeoutError:
        console.print(f"[red]The broker at {without_credentials(url)} does not answer.[/]")
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
    table = Table(title=f"Broker {without_credentials(url)}")
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
        except (OSError, ValueError, http.client.HTTPException):
            continue  # no outbox there (NATS speaks no HTTP), or not running
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
    table = Table(title=f"Dead letters on {without_credentials(url)}")
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


@app.command("rabbitmq-users")
def rabbitmq_users(
    vhost: Annotated[str, typer.Option(help="The RabbitMQ vhost Souq uses.")] = "/",
    namespace: Annotated[str, typer.Option(help="The URL's ?namespace=, if any.")] = "",
    admin_url: Annotated[
        str, typer.Option(help="amqp://… of an administrator: declare the topology through it.")
    ] = "",
) -> None:
    """Print the rabbitmqctl commands that make one user per service, allowed to publish its
    own message types and consume its own queues only (with a new password each)."""
    if admin_url:
        asyncio.run(_with_broker(admin_url, lambda b: b.declare(SUBSCRIPTIONS)))
    published = publications()
    for service in sorted(set(published) | set(SUBSCRIPTIONS)):
        password = secrets.token_hex(16)  # no leading "-" that rabbitmqctl would parse
        access = service_access(
            service, SUBSCRIPTIONS, published.get(service, []), namespace=namespace
        )
        print(f"# {service}: SOUQ_BROKER_URL=amqp://{service}:{password}@HOST:5672/...")
        for command in rabbitmqctl_commands(access, vhost, password):
            print(shlex.join(command))


if __name__ == "__main__":
    app()
