"""Sink stage: deliver what the spool holds to Yespo.

service    `Delivery`: one start/stop for `serve` and `forward`; the sink and forwarder
           built from the settings
forwarder  leases entries, sends them, writes each outcome back to the spool
policy     retry back-off and the rate ceiling (pure)
breaker    when sending stops: Yespo unreachable (the circuit breaker) or the key refused
sink       what the forwarder sends to: Yespo, or the log in a dry run
yespo      the aiohttp client for Yespo's API and what its replies mean
"""

from __future__ import annotations

from .breaker import Breaker
from .forwarder import Forwarder
from .policy import RateLimiter, RetryPolicy
from .service import Delivery, delivery_banner, make_forwarder, make_sink
from .sink import DryRunSink, Sink

__all__ = [
    "Breaker",
    "Delivery",
    "DryRunSink",
    "Forwarder",
    "RateLimiter",
    "RetryPolicy",
    "Sink",
    "delivery_banner",
    "make_forwarder",
    "make_sink",
]
