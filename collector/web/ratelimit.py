"""A request ceiling per client: token buckets by client address, bounded in number.

The browser endpoint is the one open to the internet without a secret (a site key is
public), so it answers a client that sends faster than a shopper could with 429 before
reading its body. The client is the socket's peer; behind a reverse proxy every request
comes from the proxy, so the addresses of trusted proxies are listed in a setting, and for
a request from one of them the client is read from X-Forwarded-For.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

# Buckets kept at most. A bucket is about 270 bytes (its entry, its key, a two-item list;
# 100,000 took 27 MB by tracemalloc), so a flood from any number of addresses holds at
# most that. The bucket dropped for a new one is the least recently used: the client idle
# the longest, whose bucket has most likely refilled anyway (then dropping it changes
# nothing).
MAX_CLIENTS = 100_000
# An IPv6 host is usually given a whole /64: one bucket for each, or a single host could
# draw on 2^64 buckets.
IPV6_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RateLimiter:
    """Token buckets: each client may send `burst` requests at once, and `rate` a second
    after that. Pure but for the injected clock."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int | None = None,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = MAX_CLIENTS if max_clients is None else max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # client: [tokens, at]

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, client: str) -> float:
        """0 when `client` may send a request now (which takes one token), else the seconds
        until it may."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
            self._buckets[client] = [self.burst - 1.0, now]
            return 0.0
        self._buckets.move_to_end(client)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


class ClientAddress:
    """Who a request comes from: the socket's peer, or, when the peer is a trusted proxy,
    the nearest address in X-Forwarded-For that is not one (proxies append the address
    they got the request from, so the entries right of it were written by trusted hops and
    anything left of it by the client, who may write anything there)."""

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted
        )

    def __call__(self, peer: str | None, forwarded_for: str | None) -> str:
        """The bucket key: an IPv4 address, an IPv6 /64, or "" when there is no peer."""
        if peer is None:
            return ""
        if not self.trusted:
            return bucket_key(peer)
        address = _address(peer)
        if address is None or not self._is_trusted(address):
            return bucket_key(peer)
        for entry in reversed((forwarded_for or "").split(",")):
            hop = _address(entry.strip())
            if hop is None:
                break  # not an address: the last trusted hop is as far as we can tell
            address = hop
            if not self._is_trusted(hop):
                break
        return bucket_key(str(address))

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)


def retry_after(wait: float) -> int:
    """`RateLimiter.wait`'s seconds as a Retry-After header's: whole, at least 1."""
    return max(1, math.ceil(wait))


def bucket_key(address: str) -> str:
    """IPv4 addresses as they are; IPv6 ones by their /64 (`IPV6_PREFIX`), but for IPv4
    ones written as IPv6 (a dual-stack socket's ::ffff:192.0.2.1), which are IPv4."""
    if ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))


def _address(text: str) -> Address | None:
    """The address in `text` (an IPv4 one written as IPv6 is IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
