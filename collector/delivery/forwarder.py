"""Sink stage: drain the spool into Yespo.

Guarantees (the end-to-end tests in tests/test_delivery.py check each):

* A spool entry is acknowledged (removed) only after Yespo's 2xx, or Yespo's
  "Duplicated request" (it already has it).
* A rejection (400 and other refusals) is dead-lettered with status, body and time:
  never retried blindly, never lost; `collector spool replay` sends it again.
* 429, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter, honouring Retry-After; an entry older than the maximum age is dead-lettered
  as "expired" instead of being retried forever.
* 401/403 pause delivery as a whole: the key is wrong, the events are fine. Nothing is
  dead-lettered; a probe every few seconds resumes delivery once the key works.
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

from ..errors import SpoolError
from ..metrics import Metrics
from ..normalize.orders import MAX_ORDERS_PER_REQUEST
from ..spool import Record, Spool
from .policy import RateLimiter, RetryPolicy
from .sink import Sink
from .yespo import Outcome, Reply, failed_order_ids

log = logging.getLogger("collector.forward")


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
        probe_ms: tuple[int, int] = (2000, 60_000),
        metrics: Metrics | None = None,
        clock: Callable[[], int] = _now_ms,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.concurrency = concurrency
        self._min_lease = max(1, concurrency // 4)
        self.retry = retry or RetryPolicy()
        # A lease outlives any single send (timeouts are shorter), so an entry is leased
        # again only when the process that held it died.
        self.lease_ms = lease_ms
        self.poll_ms = poll_ms
        self.probe_ms = probe_ms
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
        self._paused: str | None = None
        self._probe_wait = probe_ms[0]

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._stopping:
            return "stopping"
        return f"paused: {self._paused}" if self._paused else "running"

    @property
    def paused(self) -> bool:
        return self._paused is not None

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
                if self._paused:
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
            self._refund(tokens - self._dispatch(records))
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
        reply = await self._reply(self.sink.send_event(record.body))
        self._settle(record, reply.outcome, reply)

    async def _send_orders(self, records: list[Record]) -> None:
        reply = await self._reply(self.sink.send_orders([r.body for r in records]))
        outcome = reply.outcome
        if outcome is not Outcome.DELIVERED:
            for r in records:
                self._settle(r, outcome, reply)
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
                self._settle(r, Outcome.DELIVERED, reply)
            else:
                self._settle(r, Outcome.REJECTED, Reply(reply.status, reason))

    @staticmethod
    async def _reply(sending: Coroutine[None, None, Reply]) -> Reply:
        """The sink's reply; a failure of its own (a bug) is a retry, so that every sent
        entry gets an outcome and none waits for its lease to run out."""
        try:
            return await sending
        except Exception as exc:
            log.exception("sending failed: retrying")
            return Reply(None, f"the collector failed to send: {exc!r}")

    def _settle(self, record: Record, outcome: Outcome, reply: Reply) -> None:
        """Record what to write to the spool for one entry after one attempt."""
        now = self._clock()
        if self.metrics is not None:
            self.metrics.delivery_attempts.labels(outcome.value).inc()
        if outcome is Outcome.DELIVERED:
            self._done.ack.append(record.seq)
            if self._paused:
                self._resume()
            return
        if outcome is Outcome.REJECTED:
            self._done.dead.append((record.seq, "rejected", reply.status, reply.body))
            log.warning(
                "Yespo rejected %s %s (HTTP %s): dead-lettered: %s",
                record.event_type, record.message_id, reply.status, reply.body[:200],
            )  # fmt: skip
            return
        if outcome is Outcome.AUTH:
            self._done.retry.append((record.seq, now))
            self._pause(f"Yespo answered HTTP {reply.status}: the API key is wrong or disabled")
            return
        if self.retry.expired(record.received_at, now):
            detail = f"gave up after {record.attempts + 1} attempts; last: {reply.body}"
            self._done.dead.append((record.seq, "expired", reply.status, detail))
            return
        delay = self.retry.delay_ms(record.attempts + 1, reply.retry_after, self._rand())
        self._done.retry.append((record.seq, now + delay))

    async def _flush(self) -> None:
        """Write the outcomes collected so far. What a failed write leaves unwritten stays
        for the next flush: an entry Yespo took must not go again when its lease ends."""
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

    # -- pause on a bad key --------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if self._paused is None:
            log.error("DELIVERY PAUSED: %s. Events keep waiting in the spool; fix YESPO_API_KEY.", reason)  # fmt: skip
            self._probe_wait = self.probe_ms[0]
        self._paused = reason
        if self.metrics is not None:
            self.metrics.forwarder_paused.set(1)

    def _resume(self) -> None:
        log.warning("delivery resumed: Yespo accepted the API key again")
        self._paused = None
        if self.metrics is not None:
            self.metrics.forwarder_paused.set(0)

    async def _probe(self) -> None:
        """While paused: wait, then send one entry to learn whether the key works again.

        The wait ends early only for stop(): new events must not make Yespo hear the bad
        key more often than the probe's schedule says."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self._probe_wait / 1000)
        if self._stopping:
            return
        self._probe_wait = min(self._probe_wait * 2, self.probe_ms[1])
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._flush()
        records = await self.spool.lease(1, self.lease_ms, self._clock())
        if not records:
            return
        if records[0].kind == "order":
            await self._send_orders(records)
        else:
            await self._send_event(records[0])
