"""The ceiling's arithmetic and who a request comes from, as tables (the endpoint's
behaviour over HTTP is in test_web_ceiling.py)."""

from __future__ import annotations

import pytest

from collector.web.ratelimit import ClientAddress, RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.wait("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.wait("a") == pytest.approx(0.5)  # a token comes every 1/rate s
    clock.now += 0.25
    assert limiter.wait("a") == pytest.approx(0.25)  # a refused request takes nothing
    clock.now += 0.25
    assert limiter.wait("a") == 0
    clock.now += 3600  # idle for long: full again, never more than the burst
    assert [limiter.wait("a") for _ in range(4)][-1] == pytest.approx(0.5)
    assert limiter.wait("b") == 0  # each client its own bucket
    assert [retry_after(w) for w in (0.01, 1.0, 1.2)] == [1, 1, 2]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a proxy of ours: not believed
        ("10.0.0.2", None, "10.0.0.2"),  # a trusted proxy that names nobody
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "1.1.1.1, 198.51.100.1", "198.51.100.1"),  # what the client wrote: ignored
        ("10.0.0.2", "198.51.100.1, 10.0.0.9", "198.51.100.1"),  # two trusted hops
        ("10.0.0.2", "not-an-ip, 10.0.0.9", "10.0.0.9"),  # as far as can be told
        ("10.0.0.2", "10.0.0.7", "10.0.0.7"),  # only trusted hops: the first of them
        ("::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1"),  # IPv4 on a dual-stack socket
        ("::ffff:203.0.113.5", None, "203.0.113.5"),
        ("10.0.0.2", "2001:db8:1:2:3::9", "2001:db8:1:2::/64"),  # an IPv6 host: its /64
        (None, "198.51.100.1", ""),  # no peer (a Unix socket): one bucket for all
    ],
)
def test_the_client_is_the_peer_unless_a_trusted_proxy_names_it(
    peer: str | None, forwarded_for: str | None, client: str
) -> None:
    assert ClientAddress(("10.0.0.0/8",))(peer, forwarded_for) == client
