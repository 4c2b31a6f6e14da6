"""`souq rabbitmq-users` prints the commands that make per-service RabbitMQ users."""

from __future__ import annotations

import shlex

from souq_cli.main import app
from typer.testing import CliRunner


def test_rabbitmq_users_grants_catalog_its_own_types_and_the_cart_only_its_queues() -> None:
    result = CliRunner().invoke(app, ["rabbitmq-users", "--vhost", "shop"])
    assert result.exit_code == 0, result.output
    commands = [shlex.split(line) for line in result.output.splitlines() if line[:1] != "#"]
    topics = {(c[4], c[5]): c[6] for c in commands if c[1] == "set_topic_permissions"}
    assert "catalog\\.ProductPriceChanged\\.v1" in topics[("catalog", "souq.events")]
    assert topics[("cart", "souq.events")] == "^$"
    plain = {c[4]: c[5:] for c in commands if c[1] == "set_permissions"}
    assert plain["catalog"][0] == "^$"  # configures nothing: the topology is the admin's
    assert "souq\\.cart" not in plain["catalog"][2]  # cannot read the cart's queue
