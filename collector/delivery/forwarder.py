"""Sink stage: drain the spool into Yespo.

Guarantees (the end-to-end tests in tests/test_delivery*.py check each):

* A spool entry is acknowledged (removed) only after Yespo's 2xx, or Yespo's
  "Duplicated request" (it already has it).
* A rejection (400 and other refusals) is dead-lettered with status, body and time:
  never retried blindly, never lost; `collector spool replay` sends it again.
* 429, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter, honouring Retry-After; an entry older than the maximum age is dead-lettered
  as "expired" instead of being retried forever.
* 401/403 pause delivery as a whole: the key is wrong, the events are fine. Nothing is
  dead-lettered; a probe every few seconds resumes delivery once the key works. On a
  spool several collectors share (Redis) the pause is theirs together: one 401 stops all
  of them, one at a time probes, and all resume when a probe is delivered (`pause`).
* When Yespo is unreachable (no answer or 5xx from many keys in a row) the circuit
  breaker opens: sending stops but for one probe at a time, and the first answer closes
  it (`breaker.Breaker`). Entries that wait meanwhile count no attempts; one whose
  maximum age runs out during the outage is dead-lettered as "expired", not sent.
* Add orders refusing a whole request (400) is split in halves and sent again until the
  bad orders are alone: the rest is delivered, only those are dead-lettered.
* One key's entries (one order, one contact) reach Yespo in the order they were
  accepted, retries included: the spool hands out only a key's head, and the head stays
  leased until its outcome is written. A failing entry holds back only its own key.
* An order reaches Yespo after its contact's events accepted before it: the spool hands
  it out only once they have left the queue (acked or dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpoolError
from ..inspect import OFF, Journal
from ..metrics import Metrics
from ..normalize.orders import MAX_ORDERS_PER_REQUEST
from ..spool import Record, Spool
from .breaker import Breaker, State, detail_of, signal_of
from .pause import PAUSE_CHECK_MS, PauseShare
from .policy import RateLimiter, RetryPolicy
from .sink import Sink
from .yespo import Outcome, Reply, failed_order_ids

log = logging.getLogger("collector.forward")

# A probe skips (and dead-letters) at most this many entries that aged out while Yespo was
# unreachable before it sends one; so after a long outage Yespo's return is still noticed
# at the next probes, and the aged-out rest goes when the breaker closes.
PROBE_SKIPS_EXPIRED = 100


@dataclass(slots=True)
class _Outcomes:
    """Outcomes waiting to be written to the spool, a few statements for many entries."""

    ack: list[int] = field(default_factory=list)
    retry: list[tuple[int, int]] = field(default_factory=list)  # (seq, not_before)
    dead: list[tuple[int, str, int | None, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ack or self.retry or self.dead)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


class Forwarder:
    """Leases entries from the spool and sends them with bounded concurrency and rate."""

    def __init__(
        self,
        spool: Spool,
        sink: Sink,
        *,
        concurrency: int = 32,
        max_rps: float = 0,
        retry: RetryPolicy | None = None,
        lease_ms: int = 60_000,
        poll_ms: int = 200,
        breaker: Breaker | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], int] = _now_ms,
        rand: Callable[[], float] = random.random,
        journal: Journal = OFF,
    ) -> None:
        self.spool = spool
        self.journal = journal  # the live inspector's; `journal.live` is checked per outcome
        self.sink = sink
        self.concurrency = concurrency
        self._min_lease = max(1, concurrency // 4)
        self.retry = retry or RetryPolicy()
        # A lease outlives any single send (timeouts are shorter), so an entry is leased
        # again only when the process that held it died.
        self.lease_ms = lease_ms
        self.poll_ms = poll_ms
        self.breaker = breaker or Breaker()
        self._pause = PauseShare(spool, self.breaker, lease_ms)
        self.metrics = metrics
        self._limiter = RateLimiter(max_rps)
        self._unused = 0  # tokens of the shared ceiling taken but not spent, given back next
        self._shared_rate = False  # the spool keeps the ceiling for all its collectors
        self._clock = clock
        self._rand = rand
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()  # set by stop() only: the probe's wait ends on it
        self._stopping = False
        self._stop_timeout = 10.0
        self._done = _Outcomes()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What /readyz says of delivery."""
        return "stopping" if self._stopping else self.breaker.status()

    @property
    def paused(self) -> bool:
        """Yespo refuses the key: delivery waits for it to work again."""
        return self.breaker.state is State.PAUSED

    @property
    def breaker_open(self) -> bool:
        """Yespo is unreachable: delivery waits for a probe to get an answer."""
        return self.breaker.state is State.OPEN

    def notify(self) -> None:
        """New entries were appended: look now instead of at the next poll."""
        self._wake.set()

    # -- main loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until `stop()`; then finish in-flight sends (bounded by stop's timeout)."""
        try:
            orphans = await self.spool.reset_leases()
        except SpoolError as exc:
            log.error("could not reset leases: %s", exc)
        else:
            if orphans:
                log.warning(
                    "%d entries were in flight when the last run ended: sending again", orphans
                )
        while not self._stopping:
            try:
                await self._flush()
                if self.breaker.state is not State.PAUSED:
                    reason = await self._pause.check(self._clock())
                    if reason is not None:
                        self._follow(reason)
                if self.breaker.held:
                    await self._probe()
                    continue
                free = self.concurrency - len(self._tasks)
                if not free or (self._tasks and free < self._min_lease):
                    # Lease in batches, not one slot at a time: each lease walks the
                    # spool. A finishing send wakes us.
                    await self._sleep(self.poll_ms)
                    continue
                # Tokens first, then the lease: an entry never waits for the rate limit
                # while leased, so its lease cannot run out before it is sent.
                tokens = await self._reserve(free)
                if not tokens:
                    continue
                if self.breaker.held:  # a send that finished meanwhile stopped delivery
                    self._refund(tokens)
                    continue
                now = self._clock()
                records = await self.spool.lease(tokens, self.lease_ms, now)
                orders = sum(1 for r in records if r.kind == "order")
                if 0 < orders < MAX_ORDERS_PER_REQUEST:
                    # A token pays for a request, and one request takes up to 1000 orders:
                    # fill it with the orders waiting behind.
                    records += await self.spool.lease(
                        MAX_ORDERS_PER_REQUEST - orders, self.lease_ms, now, kind="order"
                    )
            except SpoolError as exc:
                log.error("spool unavailable to the forwarder, retrying in 1 s: %s", exc)
                await self._sleep(1000)
                continue
            except Exception:  # a bug must not stop delivery for good: log it, go on
                log.exception("forwarder loop failed, retrying in 1 s")
                await self._sleep(1000)
                continue
            self._refund(tokens - self._dispatch(self._drop_expired(records)))
            if not records:
                await self._sleep(self.poll_ms)
        await self._drain()

    def stop(self, timeout_s: float) -> None:
        """Ask `run()` to stop leasing and give in-flight sends `timeout_s` to finish."""
        self._stop_timeout = timeout_s
        self._stopping = True
        self._stopped.set()
        self._wake.set()

    async def _drain(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._stop_timeout)
            for task in pending:
                task.cancel()  # its entry stays leased and goes again after the next start
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(SpoolError):
            await self._flush()

    async def _reserve(self, most: int) -> int:
        """Tokens for up to `most` requests: from the ceiling the spool's collectors share
        (Redis: one round trip per lease, not per event), else from this process's own."""
        if self._limiter.rate <= 0:
            return most
        shared = await self.spool.take_tokens(
            most, self._limiter.rate, self._limiter.burst, self._unused
        )
        self._shared_rate = shared is not None
        if shared is None:
            return await self._limiter.reserve(most)
        self._unused = 0
        taken, wait_ms = shared
        if not taken:
            await self._sleep(max(1, wait_ms))
        return taken

    def _refund(self, count: int) -> None:
        if self._shared_rate:
            self._unused += max(0, count)
        else:
            self._limiter.refund(count)

    async def _sleep(self, ms: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), ms / 1000)
        self._wake.clear()

    def _dispatch(self, records: Sequence[Record]) -> int:
        """Start one send per event and one per chunk of orders; return requests made."""
        orders = [r for r in records if r.kind == "order"]
        requests = 0
        for r in records:
            if r.kind != "order":
                self._spawn(self._send_event(r))
                requests += 1
        for start in range(0, len(orders), MAX_ORDERS_PER_REQUEST):
            self._spawn(self._send_orders(orders[start : start + MAX_ORDERS_PER_REQUEST]))
            requests += 1
        return requests

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("send task failed", exc_info=task.exception())
        self._wake.set()

    # -- sending -------------------------------------------------------------------------

    async def _send_event(self, record: Record) -> None:
        started = time.perf_counter()
        reply = await self._reply(self.sink.send_event(record.body))
        self._observe(reply, record.key)
        self._settle(record, reply.outcome, reply, _ms_since(started))

    async def _send_orders(self, records: list[Record], *, whole: bool = True) -> None:
        started = time.perf_counter()
        reply = await self._reply(self.sink.send_orders([r.body for r in records]))
        ms = _ms_since(started)
        self._observe(reply, records[0].key)
        outcome = reply.outcome
        if outcome is Outcome.REJECTED and len(records) > 1:
            if whole:
                log.warning(
                    "Add orders refused a request of %d orders (HTTP %s): sending it again in"
                    " halves to find the bad ones: %s",
                    len(records), reply.status, reply.body[:200],
                )  # fmt: skip
            await self._bisect(records)
            return
        if outcome is not Outcome.DELIVERED:
            for r in records:
                self._settle(r, outcome, reply, ms)
            return
        failed = failed_order_ids(reply.body)
        if failed is None:
            log.warning(
                "cannot read which orders Add orders refused, so all %d count as delivered: %s",
                len(records), reply.body[:200],
            )  # fmt: skip
            failed = {}
        for r in records:
            reason = failed.get(r.key.removeprefix("order:"))
            if reason is None:
                self._settle(r, Outcome.DELIVERED, reply, ms)
            else:
                self._settle(r, Outcome.REJECTED, Reply(reply.status, reason), ms)

    async def _bisect(self, records: list[Record]) -> None:
        """Yespo refused a whole request of orders, as one bad order makes it do: send each
        half again, and each refused half in halves, down to single orders. The good ones
        are delivered; only the bad ones are dead-lettered, each with Yespo's own answer.

        Each half is a request and waits for its token of the rate limiter: k bad orders
        among n cost about 2k*log2(n/k) requests, n single orders 2n-1 at the most."""
        middle = (len(records) + 1) // 2
        for part in (records[:middle], records[middle:]):
            if not self.breaker.held:
                await self._limiter.reserve(1)
            if self.breaker.held:  # delivery stopped meanwhile: these wait until it goes on
                now = self._clock()
                self._done.retry.extend((r.seq, now) for r in part)
                continue
            await self._send_orders(part, whole=False)

    @staticmethod
    async def _reply(sending: Coroutine[None, None, Reply]) -> Reply:
        """The sink's reply; a failure of its own (a bug) is a retry, so that every sent
        entry gets an outcome and none waits for its lease to run out."""
        try:
            return await sending
        except Exception as exc:
            log.exception("sending failed: retrying")
            return Reply(None, f"the collector failed to send: {exc!r}")

    def _settle(self, record: Record, outcome: Outcome, reply: Reply, ms: int = 0) -> None:
        """Record what to write to the spool for one entry after one attempt."""
        now = self._clock()
        if self.metrics is not None:
            self.metrics.delivery_attempts.labels(outcome.value).inc()
        journal = self.journal
        attempt = record.attempts + 1
        if outcome is Outcome.DELIVERED:
            self._done.ack.append(record.seq)
            if journal.live:
                self._note(
                    "delivered", record, {"status": reply.status, "ms": ms, "attempt": attempt}
                )
            return
        if outcome is Outcome.REJECTED:
            self._done.dead.append((record.seq, "rejected", reply.status, reply.body))
            log.warning(
                "Yespo rejected %s %s (HTTP %s): dead-lettered: %s",
                record.event_type, record.message_id, reply.status, reply.body[:200],
            )  # fmt: skip
            if journal.live:
                shown = {"reason": "rejected", "status": reply.status, "answer": reply.body}
                self._note("dead", record, {**shown, "ms": ms, "attempt": attempt})
            return
        if outcome is Outcome.AUTH:  # the breaker paused delivery: it goes when the key works
            self._done.retry.append((record.seq, now))
            if journal.live:
                why = f"Yespo refused the key (HTTP {reply.status}): delivery paused until it works"
                self._note(
                    "retried",
                    record,
                    {"status": reply.status, "why": why, "next": None, "attempt": attempt},
                )
            return
        if self.retry.expired(record.received_at, now):
            detail = f"gave up after {record.attempts + 1} attempts; last: {reply.body}"
            self._done.dead.append((record.seq, "expired", reply.status, detail))
            if journal.live:
                self._note(
                    "dead", record, {"reason": "expired", "status": reply.status, "answer": detail}
                )
            return
        delay = self.retry.delay_ms(record.attempts + 1, reply.retry_after, self._rand())
        self._done.retry.append((record.seq, now + delay))
        if journal.live:
            why = (
                reply.body[:500]
                if reply.status is None
                else f"HTTP {reply.status}: {reply.body[:500]}"
            )
            self._note(
                "retried",
                record,
                {"status": reply.status, "why": why, "next": now + delay, "attempt": attempt},
            )

    def _note(self, step: str, record: Record, detail: dict[str, Any]) -> None:
        self.journal.note(
            step, record.message_id, "delivery", record.event_type, record.key, record.after, detail
        )

    def _drop_expired(self, records: list[Record]) -> list[Record]:
        """The entries to send; the others, whose maximum age ran out while the breaker was
        open, are dead-lettered as "expired": tried then, they would have failed and
        expired, and waiting out the outage must not make them live longer."""
        max_age = self.retry.max_age_ms
        now = self._clock()
        keep = []
        for r in records:
            deadline = r.received_at + max_age
            if deadline < now and self.breaker.was_open(deadline):
                detail = (
                    f"older than COLLECTOR_MAX_EVENT_AGE ({max_age // 1000} s) after"
                    f" {r.attempts} attempts; Yespo was unreachable when it got that old"
                )
                self._done.dead.append((r.seq, "expired", None, detail))
                if self.journal.live:
                    self._note("dead", r, {"reason": "expired", "status": None, "answer": detail})
            else:
                keep.append(r)
        return keep

    async def _flush(self) -> None:
        """Write the outcomes collected so far. What a failed write leaves unwritten stays
        for the next flush: an entry Yespo took must not go again when its lease ends."""
        await self._pause.tell()  # first: entries that got a 401 go back after the pause
        if not self._done:
            return
        done, self._done = self._done, _Outcomes()
        try:
            if done.ack:
                await self.spool.ack(done.ack)
                if self.metrics is not None:
                    self.metrics.sent.inc(len(done.ack))
                done.ack = []
            done.retry.sort(key=lambda r: r[1])  # one release per retry time
            for not_before, group in itertools.groupby(list(done.retry), key=lambda r: r[1]):
                seqs = [seq for seq, _ in group]
                await self.spool.release(seqs, not_before)
                del done.retry[: len(seqs)]
            now = self._clock()
            while done.dead:
                seq, reason, status, detail = done.dead[0]
                await self.spool.dead_letter([seq], reason, status, detail, now)
                if self.metrics is not None:
                    self.metrics.dead_lettered.labels(reason).inc()
                del done.dead[0]
        finally:  # sends that settled meanwhile are in self._done already: these go first
            self._done.ack[:0] = done.ack
            self._done.retry[:0] = done.retry
            self._done.dead[:0] = done.dead

    # -- held: the breaker is open, or Yespo refuses the key ------------------------------

    def _observe(self, reply: Reply, key: str) -> None:
        """Tell the breaker what one request got; log and show a change of state, once."""
        breaker = self.breaker
        was, since = breaker.state, breaker.since
        new = breaker.observe(signal_of(reply), key, detail_of(reply), self._clock())
        if new is not None:
            self._pause.saw(was, new)
            self._changed(was, since, new)

    def _follow(self, reason: str | None) -> None:
        """Another collector on the spool paused delivery (why), or ended the pause (None)."""
        breaker = self.breaker
        was, since = breaker.state, breaker.since
        new = breaker.follow(reason, self._clock())
        if new is not None:
            self._changed(was, since, new)

    def _changed(self, was: State, since: int, new: State) -> None:
        log.log(*self.breaker.news(was, since))
        if self.metrics is not None:
            self.metrics.forwarder_paused.set(new is State.PAUSED)
            self.metrics.breaker_open.set(new is State.OPEN)

    async def _probe(self) -> None:
        """While held: wait, then send one entry to learn whether Yespo answers (open) or
        takes the key (paused) again; its answer decides (`_observe`).

        The wait ends early only for stop(): new events must not make Yespo hear a bad key,
        or a down Yespo get tried, more often than the probe's schedule says."""
        if self._pause.shared and self.breaker.state is State.PAUSED:
            if not await self._my_turn():
                return
        else:
            await self._wait_stop(self.breaker.next_probe_ms())
        if self._stopping:
            return
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._flush()
        if not self.breaker.held:
            return  # a send still in flight got the answer that ended the hold
        await self._limiter.reserve(1)
        records: list[Record] = []
        for _ in range(PROBE_SKIPS_EXPIRED):
            leased = await self.spool.lease(1, self.lease_ms, self._clock())
            records = self._drop_expired(leased)
            if records or not leased:
                break
        if not records:
            self._limiter.refund(1)
        elif records[0].kind == "order":
            await self._send_orders(records)
        else:
            await self._send_event(records[0])

    async def _my_turn(self) -> bool:
        """The pause is the spool's: wait for this collector's next probe, asking the spool
        every PAUSE_CHECK_MS whether the pause is over (then resume) and for the turn to
        probe (only its holder probes; it passes on when the holder stops asking). True:
        probe now."""
        due = self._clock() + self.breaker.next_probe_ms()
        while not self._stopping:
            left = due - self._clock()
            await self._wait_stop(min(PAUSE_CHECK_MS, left) if left > 0 else PAUSE_CHECK_MS)
            if self._stopping:
                break
            pause = await self._pause.turn()
            if pause.reason is None:
                self._follow(None)
                return False
            if pause.probing and self._clock() >= due:
                return True
        return False

    async def _wait_stop(self, ms: int) -> None:
        """Wait `ms`, or less if stop() is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), ms / 1000)
