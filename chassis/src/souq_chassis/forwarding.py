"""The gateway vouches for its client's address to the service behind it.

A service that limits per client (identity's sign-in buckets) sees only the gateway as its
socket peer. `X-Forwarded-For` cannot tell it more: on one machine any local process can send
that header. So the gateway sends the address in `X-Souq-Client` together with a secret it
shares with the service (`SOUQ_FORWARDING_SECRET`, which `souq up` makes per data directory),
and the service believes the address only when the secret matches.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

CLIENT_HEADER = "X-Souq-Client"
SECRET_HEADER = "X-Souq-Forwarding-Secret"


def vouch(client: str, secret: str) -> dict[str, str]:
    """Headers that tell the service behind who the client is (none without a secret)."""
    if not secret:
        return {}
    return {CLIENT_HEADER: client, SECRET_HEADER: secret}


def forwarded_client(headers: Mapping[str, str], secret: str) -> str | None:
    """The client address the gateway vouched for, or None when the secret is not given (or
    not configured) or the address is not an IP address."""
    given = headers.get(SECRET_HEADER)
    if not secret or given is None:
        return None
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return None
    client = headers.get(CLIENT_HEADER, "")
    try:
        return str(ipaddress.ip_address(client))
    except ValueError:
        return None
