"""When to stop sending: the circuit breaker in front of the sink, and the pause on a key
Yespo refuses. Pure: the forwarder tells it each request's answer and the clock; it says
when delivery stops, how long to wait before the next probe, and when delivery goes on.

Both holds are one mechanism: sending stops, the forwarder sends one entry at a time (a
probe) on a doubling schedule, and the answer to a probe decides.

* **Open** (Yespo unreachable): `OPEN_AFTER_FAILURES` requests in a row got no answer, a
  5xx or a 408, with no answer from Yespo between them, and they were of at least
  `OPEN_AFTER_KEYS` different keys. It closes on the first answer that shows Yespo up: a
  2xx, a 400, a 429 (Yespo is there and asks for less: the entry waits for Retry-After as
  always, which is a pace, not an outage).
* **Paused** (401/403: the key is wrong or disabled): entered on the first such answer,
  left only when Yespo takes an entry (2xx). On a spool that several collectors share
  (Redis) the pause is the spool's: `follow` enters and leaves it when another collector
  did, and one collector at a time probes (the forwarder asks the spool whose turn it is).

The breaker also remembers when it was open, so that an entry whose maximum age ran out
during an outage expires as it would have had it been tried then (`was_open`).
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque

from .yespo import Outcome, Reply

# Failed requests in a row that open the breaker. At concurrency 32 (the default) a down
# Yespo fails this many in its first batch; a flaky one (503 for 30% of requests) fails
# ten in a row about once in 170,000 requests, and then closes at the next probe.
OPEN_AFTER_FAILURES = 10
# ...of at least this many different keys. One bad event that gets a 5xx is retried on
# its own key (its key's later entries wait behind it), so however often it fails it is
# one key: it alone never opens the breaker, and healthy keys' answers reset the count.
OPEN_AFTER_KEYS = 5
# Probe back-off while Yespo is unreachable: the first after 1 s (a blip is over soon),
# doubling to 5 s. One request every 5 s costs nothing on either side, and it bounds how
# long delivery lags behind Yespo's return.
OUTAGE_PROBE_MS = (1000, 5000)
# Probe back-off while Yespo refuses the key: 2 s, doubling to a minute. A person fixes a
# key; a minute is soon enough, and a bad key must not be heard often.
AUTH_PROBE_MS = (2000, 60_000)
# Outages remembered for `was_open`; beyond this (a breaker that flapped this often) the
# oldest are forgotten, and entries that aged out in them follow the usual rule.
MAX_OUTAGES_KEPT = 64


class Signal(enum.Enum):
    """What one request's answer says about Yespo (not about the entry)."""

    DELIVERED = "delivered"  # 2xx or Duplicated request: up, and it takes our key
    ANSWERED = "answered"  # 400, 429 and other 4xx: up, and answering
    DOWN = "down"  # no answer (refused, reset, timeout), 5xx, 408: maybe down
    AUTH = "auth"  # 401/403: up, and it refuses our key


def signal_of(reply: Reply) -> Signal:
    outcome = reply.outcome
    if outcome is Outcome.DELIVERED:
        return Signal.DELIVERED
    if outcome is Outcome.AUTH:
        return Signal.AUTH
    if outcome is Outcome.RETRY and reply.status != 429:
        return Signal.DOWN
    return Signal.ANSWERED


def detail_of(reply: Reply) -> str:
    """What to report of an answer: the reason shown while it holds delivery."""
    if reply.outcome is Outcome.AUTH:
        return f"Yespo answered HTTP {reply.status}: the API key is wrong or disabled"
    if reply.status is None:
        return reply.body[:200]
    return f"HTTP {reply.status}: {reply.body[:200]}"


class State(enum.Enum):
    CLOSED = "closed"  # sending
    OPEN = "open"  # Yespo unreachable: one probe at a time
    PAUSED = "paused"  # Yespo refuses the key: one probe at a time


class Breaker:
    """The state machine; `observe` each request's answer, `next_probe_ms` while held."""

    def __init__(
        self,
        *,
        open_after: int = OPEN_AFTER_FAILURES,
        open_keys: int = OPEN_AFTER_KEYS,
        outage_probe_ms: tuple[int, int] = OUTAGE_PROBE_MS,
        auth_probe_ms: tuple[int, int] = AUTH_PROBE_MS,
    ) -> None:
        self.open_after = open_after
        self.open_keys = open_keys
        self.outage_probe_ms = outage_probe_ms
        self.auth_probe_ms = auth_probe_ms
        self.state = State.CLOSED
        self.reason = ""  # while held: the last answer that kept it so
        self.since = 0  # epoch ms the current state began
        self.failures = 0  # failed requests in a row while closed
        self._keys: set[str] = set()  # their keys, up to open_keys of them
        self._wait_ms = 0
        self._outages: deque[tuple[int, int]] = deque(maxlen=MAX_OUTAGES_KEPT)

    @property
    def held(self) -> bool:
        """Sending has stopped (open or paused): only probes go."""
        return self.state is not State.CLOSED

    def observe(self, signal: Signal, key: str, detail: str, now: int) -> State | None:
        """One request's answer (`key` of its entry, `detail` what to report); the state
        it moved the breaker to, or None when it stays (so a caller logs changes only)."""
        state = self.state
        if signal is Signal.AUTH:
            new = State.PAUSED
        elif state is State.PAUSED:
            # Only a taken entry shows the key works again (an outage answer tells nothing).
            new = State.CLOSED if signal is Signal.DELIVERED else state
        elif signal is not Signal.DOWN:
            new = State.CLOSED
        elif state is State.OPEN:
            new = state
        else:
            self.failures += 1
            if len(self._keys) < self.open_keys:
                self._keys.add(key)
            opens = self.failures >= self.open_after and len(self._keys) >= self.open_keys
            new = State.OPEN if opens else state
        if new is not State.CLOSED:
            self.reason = detail
        if new is state:
            if new is State.CLOSED and signal is not Signal.DOWN:
                self.failures = 0
                self._keys.clear()
            return None
        return self._move(new, now)

    def follow(self, reason: str | None, now: int) -> State | None:
        """Another collector that shares the spool paused delivery (`reason`: why) or ended
        the pause (None: Yespo took its probe). The state it moved the breaker to, or None.
        A pause overrides an outage, as a probe answered 401 does."""
        if reason is not None:
            self.reason = reason
            return None if self.state is State.PAUSED else self._move(State.PAUSED, now)
        return self._move(State.CLOSED, now) if self.state is State.PAUSED else None

    def _move(self, new: State, now: int) -> State:
        if self.state is State.OPEN:
            self._outages.append((self.since, now))
        self.state, self.since = new, now
        self.failures = 0
        self._keys.clear()
        self._wait_ms = self._schedule()[0]
        return new

    def status(self) -> str:
        """What /readyz says of delivery: running, paused (why) or breaker open (since when,
        the last error)."""
        if self.state is State.PAUSED:
            return f"paused: {self.reason}"
        if self.state is State.OPEN:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since / 1000))
            return (
                f"breaker open: Yespo unreachable since {since}, one probe at a time;"
                f" last: {self.reason}"
            )
        return "running"

    def news(self, was: State, was_since: int) -> tuple[int, str]:
        """The log line (level, message) of the change from `was`, which began at
        `was_since`, to the state now."""
        if self.state is State.PAUSED:
            return logging.ERROR, (
                f"DELIVERY PAUSED: {self.reason}. Events keep waiting in the spool;"
                " fix YESPO_API_KEY."
            )
        if self.state is State.OPEN:
            return logging.ERROR, (
                f"DELIVERY STOPPED, breaker open: Yespo is unreachable ({self.open_after}"
                f" requests in a row of {self.open_keys} or more keys failed; last:"
                f" {self.reason}). One probe at a time, at most"
                f" {self.outage_probe_ms[1] / 1000:g} s apart; events keep waiting in the spool."
            )
        if was is State.PAUSED:
            return logging.WARNING, "delivery resumed: Yespo accepted the API key again"
        return logging.WARNING, (
            "delivery resumed, breaker closed: Yespo answered again after"
            f" {(self.since - was_since) / 1000:.0f} s"
        )

    def next_probe_ms(self) -> int:
        """The wait before the next probe; each call doubles the one after, to the cap."""
        wait = self._wait_ms
        self._wait_ms = min(wait * 2, self._schedule()[1])
        return wait

    def was_open(self, at: int) -> bool:
        """Was the breaker open at epoch ms `at` (of the outages it remembers)?"""
        if self.state is State.OPEN and at >= self.since:
            return True
        return any(start <= at <= end for start, end in self._outages)

    def _schedule(self) -> tuple[int, int]:
        return self.auth_probe_ms if self.state is State.PAUSED else self.outage_probe_ms
