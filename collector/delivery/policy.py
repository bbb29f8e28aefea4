"""How often and when to send: retry back-off and the rate ceiling. No I/O but the
limiter's sleep; the clock and randomness are passed in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with equal jitter, floored by Retry-After. Pure."""

    base_ms: int = 1000
    # Yespo's own plugins back off for minutes; beyond 5 minutes a wait only adds latency.
    max_delay_ms: int = 300_000
    # Past this age an entry is dead-lettered ("expired") instead of retried again.
    max_age_ms: int = 7 * 24 * 3600 * 1000

    def delay_ms(self, failures: int, retry_after_s: float | None, rand: float) -> int:
        """Wait before attempt number `failures + 1`; `rand` is uniform in [0, 1)."""
        doublings = min(max(failures - 1, 0), 30)
        ceiling: int = min(self.max_delay_ms, self.base_ms << doublings)
        delay = ceiling // 2 + int(rand * (ceiling - ceiling // 2))
        if retry_after_s is not None:
            # Never past the entry's whole life: it expires by then anyway.
            delay = max(delay, int(min(retry_after_s * 1000, self.max_age_ms)))
        return delay

    def expired(self, received_at: int, now: int) -> bool:
        return now - received_at > self.max_age_ms


class RateLimiter:
    """Token bucket: at most `rate` acquisitions per second, bursts up to `burst`."""

    def __init__(
        self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate / 10))
        self._tokens = float(self.burst)
        self._clock = clock
        self._last = clock()

    async def reserve(self, most: int) -> int:
        """Wait for at least one token, then take up to `most`; return how many."""
        if self.rate <= 0:
            return most
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                taken: int = min(most, int(self._tokens))
                self._tokens -= taken
                return taken
            await asyncio.sleep((1 - self._tokens) / self.rate)

    def refund(self, count: int) -> None:
        """Give back tokens reserved for requests that were not made."""
        if self.rate > 0 and count > 0:
            self._tokens = min(float(self.burst), self._tokens + count)
