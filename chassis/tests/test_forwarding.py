from __future__ import annotations

from souq_chassis.forwarding import forwarded_client, vouch

SECRET = "s3cret-shared-by-gateway-and-identity"


def test_a_client_vouched_for_with_the_shared_secret_is_believed() -> None:
    assert forwarded_client(vouch("203.0.113.7", SECRET), SECRET) == "203.0.113.7"
    assert forwarded_client(vouch("2001:db8::1", SECRET), SECRET) == "2001:db8::1"


def test_a_client_named_without_the_secret_is_not_believed() -> None:
    headers = vouch("203.0.113.7", SECRET)
    assert forwarded_client(headers, "another secret") is None
    assert forwarded_client({"X-Souq-Client": "203.0.113.7"}, SECRET) is None
    # A service without a secret believes nobody, even a header that carries an empty one.
    assert (
        forwarded_client({"X-Souq-Client": "203.0.113.7", "X-Souq-Forwarding-Secret": ""}, "")
        is None
    )


def test_what_is_not_an_address_is_not_believed_even_with_the_secret() -> None:
    assert forwarded_client(vouch("not-an-ip, 10.0.0.1", SECRET), SECRET) is None


def test_without_a_secret_the_gateway_names_nobody() -> None:
    assert vouch("203.0.113.7", "") == {}
