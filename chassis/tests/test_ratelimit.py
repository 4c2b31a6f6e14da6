"""Token buckets: a burst, then the refill rate; per key; a bounded number of keys."""

from __future__ import annotations

import pytest
from souq_chassis.ratelimit import RateLimited, RateLimiter, client_key


def test_a_bucket_lets_a_burst_through_then_refuses_until_it_refills() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=3)

    assert [limiter.take("ip", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("ip", 100.0) == pytest.approx(0.5)
    assert limiter.take("ip", 100.5) == 0.0  # one token refilled in half a second
    assert limiter.take("ip", 100.5) > 0


def test_buckets_are_per_key_and_refill_no_higher_than_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=2)
    limiter.take("a", 0.0)
    limiter.take("a", 0.0)

    assert limiter.take("b", 0.0) == 0.0
    assert limiter.take("a", 0.0) == pytest.approx(1.0)
    assert [limiter.take("a", 1000.0) for _ in range(3)][2] > 0  # refilled to 2, not 1000


def test_the_number_of_buckets_kept_is_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_keys=10)
    for i in range(1000):
        limiter.take(f"ip-{i}", 0.0)

    assert len(limiter._buckets) == 10
    assert limiter.take("ip-999", 0.0) > 0  # the newest are the ones kept


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_limit_must_let_something_through(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


@pytest.mark.parametrize(("wait", "retry_after"), [(0.01, 1), (1.0, 1), (9.2, 10)])
def test_retry_after_is_whole_seconds_and_never_zero(wait: float, retry_after: int) -> None:
    assert RateLimited(wait).retry_after == retry_after


def test_every_loopback_address_is_one_local_client() -> None:
    assert {client_key(a) for a in ("127.0.0.1", "127.0.0.2", "127.9.9.9", "::1")} == {"loopback"}
    assert client_key("::ffff:127.0.0.5") == "loopback"


def test_an_ipv6_client_is_its_slash_64_and_ipv4_is_itself() -> None:
    assert (
        client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::5") != client_key("2001:db8:1:2::5")
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("unknown") == "unknown"
