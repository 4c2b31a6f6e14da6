"""Per-service RabbitMQ users: permissions that let a service publish its own message types and
consume its own queues, and nothing else, derived from the declared topology.

A service gets no `configure` on the shared exchanges or on other services' queues (that would
let it delete them), so an administrator declares the whole topology once; a service then
checks, instead of declaring, what it may not declare. Publishing to `souq.events` is limited
by topic permissions to the routing keys (types) the service publishes; retries and dead
letters go through `souq.consumers` under the consumer's own keys. Nobody may write to the
default exchange, which would reach any queue by its name."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Access:
    user: str
    configure: str
    write: str
    read: str
    # topic exchange -> (write, read) patterns of routing keys
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)


def _exactly(names: Iterable[str]) -> str:
    """A pattern that matches these names and nothing else (`^$` for none)."""
    names = sorted(set(names))
    return f"^({'|'.join(re.escape(n) for n in names)})$" if names else "^$"


def service_access(
    service: str,
    subscriptions: Mapping[str, Sequence[str]],
    publishes: Sequence[str],
    *,
    namespace: str = "",
    user: str | None = None,
) -> Access:
    """The permissions of `service`'s user on a vhost holding Souq's topology."""
    prefix = f"{namespace}." if namespace else ""
    events, consumers = f"{prefix}souq.events", f"{prefix}souq.consumers"
    consumes = service in subscriptions
    own_queues = [f"{prefix}souq.{service}{s}" for s in ("", ".delay", ".dead")] if consumes else []
    own_keys = [f"{service}.retry", f"{service}.dead"] if consumes else []
    return Access(
        user=user or service,
        # its own queues (declared again after a reconnect), never an exchange
        configure=_exactly(own_queues),
        # publishing (events, its retries and dead letters) and binding its own queues
        write=_exactly(
            ([events] if publishes else []) + ([consumers] if consumes else []) + own_queues
        ),
        # binding its queues to the exchanges, and consuming them
        read=_exactly(([events, consumers] if consumes else []) + own_queues),
        topics={
            events: (_exactly(publishes), _exactly(subscriptions.get(service, []))),
            consumers: (
                _exactly(own_keys),
                _exactly([*own_keys, f"{service}.due"] if consumes else []),
            ),
        },
    )


def rabbitmqctl_commands(access: Access, vhost: str, password: str) -> list[list[str]]:
    """`rabbitmqctl` command lines that create the user and grant it exactly `access`."""
    commands = [
        ["rabbitmqctl", "add_user", access.user, password],
        [
            "rabbitmqctl",
            "set_permissions",
            "-p",
            vhost,
            access.user,
            access.configure,
            access.write,
            access.read,
        ],
    ]
    for exchange, (write, read) in access.topics.items():
        commands.append(
            [
                "rabbitmqctl",
                "set_topic_permissions",
                "-p",
                vhost,
                access.user,
                exchange,
                write,
                read,
            ]
        )
    return commands
