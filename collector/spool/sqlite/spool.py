"""SQLite spool: the embedded default. One file, WAL journal, group commit.

One writer thread owns the connection and runs every transaction, in the order they were
asked for. `append` queues its entries and waits; the writer takes everything queued,
writes it in one transaction, and answers every waiter after the COMMIT; appends that
arrive meanwhile ride on the next commit. Under load one commit (and its fsync) is shared
by many requests, and the writer goes straight on to the next group without waiting for
the event loop: it only hands the results back. SQLite releases the GIL while a statement
runs, and a group needs only a handful of statements (see `_write_group`), so the
writing runs on the other core while the event loop serves requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from ...errors import SpoolError, SpoolFull
from ..base import DeadLetter, EntryLike, LocalVisitorLocks, Record, Rejected, Spool, SpoolStats
from . import carts as cart_sql
from . import rejected as rejected_sql
from . import sql
from .claim import DeliveryLock
from .jobs import STOP, Append, Call, join_rows, resolve
from .leases import Leases

log = logging.getLogger("collector.spool")

T = TypeVar("T")

# How often expired messageIds are removed from the dedup table, and how many at a time
# (a bounded delete keeps one prune from holding the writer for long). A prune that found a
# full batch of them goes again after _PRUNE_AGAIN_S, until the backlog is gone: 20,000 a
# minute would fall behind any steady rate over 333 events/s with a messageId.
_PRUNE_EVERY_S = 60.0
_PRUNE_AGAIN_S = 1.0
_PRUNE_ROWS = 20_000
# How often the writer counts the file's waiting and held entries again. Other processes
# change them too: `collector forward` acks what `collector serve --no-forward` appended,
# `collector spool replay` moves dead letters back. Counting 1,000,000 rows takes ~10 ms.
_RECOUNT_EVERY_S = 60.0
# When the counts say the spool is full, an append has them counted again first, at most
# this often: the entries that another process delivered no longer count.
_RECOUNT_WHEN_FULL_S = 1.0
# A group commit stops taking more requests once their bodies reach this many bytes:
# SQLite refuses a blob over 1 GB, and a writer that fell behind should not try to catch
# up in one transaction.
_GROUP_BYTES = 64 << 20
# Address space, not memory: pages are mapped as they are read.
_MMAP_BYTES = 1 << 30
# Readiness says "not ready" below this much free space where the spool lives: a group
# commit, the WAL and its checkpoints need room, and a load balancer should move traffic
# away before writes fail rather than after.
_MIN_FREE_BYTES = 1 << 20


class SqliteSpool(LocalVisitorLocks, Spool):
    def __init__(
        self, path: str, *, max_events: int, dedup_window_ms: int, synchronous: str = "full"
    ) -> None:
        super().__init__()
        self.path = path
        self.max_events = max_events
        self._window = dedup_window_ms
        self._sync = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self._jobs: queue.SimpleQueue[Append | Call | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        # Entries waiting in the file (`_depth`) and held for anonymous visitors (`_held`):
        # changed by the writer thread only, in commit order, and counted again from the
        # file now and then (`_recount`), since other processes change them too.
        self._depth = 0
        self._held = 0
        # Entries queued for the queue and not yet committed: changed on the event loop
        # only. Between a commit and its settling an entry counts twice, which errs on the
        # full side. (Held entries are never refused: see `_bound_held`.)
        self._queued = 0
        self._recounted = 0.0  # time.monotonic() of the last recount asked by an append
        self._leases = Leases()
        self._delivery = DeliveryLock(path)
        self._queue_rows = sql.Rows()
        self._held_rows = sql.Rows()
        self._closed = False
        #: Transactions that committed appended events (tests check grouping with it).
        self.commits = 0
        # Free bytes where the spool lives when a write last failed for want of space
        # (set by the writer thread; None once space came back): readiness stays "not
        # ready" until more space is free than then, since BEGIN IMMEDIATE, which proves
        # the file can be locked, succeeds on a full disk.
        self._full_at: int | None = None
        self._dir = os.path.dirname(os.path.abspath(path))

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._open_sync()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._writer = threading.Thread(
            target=self._write_forever, name="spool-writer", daemon=True
        )
        self._writer.start()

    def _open_sync(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise SpoolError(f"{self.path}: could not switch to WAL journal (got {mode})")
        # FULL: the WAL is fsynced at each commit, so an acknowledged event survives a
        # power cut; NORMAL survives a process crash only.
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        # Read pages through a memory map instead of a read() each: the dedup index takes
        # claims at random places and soon outgrows SQLite's page cache. Writes still go
        # through the WAL as before. Measured on 900,000 claimed events in groups of 3,000:
        # 6.7-6.9 µs of the writer's CPU per event against 7.4-8.2.
        conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        conn.executescript(sql.SCHEMA)
        sql.upgrade(conn)
        conn.executescript(cart_sql.SCHEMA)
        conn.executescript(rejected_sql.SCHEMA)
        self._conn = conn
        self._recount()

    async def close(self) -> None:
        """Commit everything already appended, then close the file."""
        if self._closed:
            return
        self._closed = True
        self._delivery.release()
        if self._writer is None or self._stopped is None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return
        self._jobs.put(STOP)  # after everything queued before it
        await asyncio.shield(self._stopped)
        self._writer.join()

    async def _run(
        self, fn: Callable[..., T], *args: Any, after: Callable[[T], None] | None = None
    ) -> T:
        """Run `fn(*args)` on the writer thread; if it began a transaction, it is committed
        there (rolled back if `fn` raised), and then `after(result)` runs there too.
        sqlite3 errors come out as SpoolError."""
        if self._closed or self._loop is None:
            raise SpoolError("spool is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._put(Call(fn, args, fut, after))
        return await fut

    def _put(self, item: Append | Call) -> None:
        # The writer only stops when closed, but a waiter must never wait on a dead thread.
        if self._writer is None or not self._writer.is_alive():
            raise SpoolError("spool writer is not running")
        self._jobs.put(item)

    async def _sql(
        self, fn: Callable[..., T], *args: Any, after: Callable[[T], None] | None = None
    ) -> T:
        """`_run` one of `sql`'s transactions, which take the connection first."""
        return await self._run(lambda: fn(self._conn, *args), after=after)

    # -- counts --------------------------------------------------------------------------

    def _recount(self) -> None:
        """On the writer thread (or before it starts): the counts, from the file."""
        assert self._conn is not None
        self._depth = self._conn.execute("SELECT count(*) FROM events").fetchone()[0]
        self._held = self._conn.execute("SELECT count(*) FROM held").fetchone()[0]

    def _adjust(self, depth: int, held: int = 0) -> None:
        """On the writer thread, after a commit: what it changed."""
        self._depth += depth
        self._held += held

    def room(self, bound: int | None = None) -> int:
        limit = self.max_events if bound is None else min(bound, self.max_events)
        return max(0, limit - self._depth - self._queued)

    async def _check_bound(self, more: int, bound: int | None = None) -> None:
        """SpoolFull if `more` entries would take the queue past its bound: by the counts,
        and if they say so, by the file's counts (counted again at most every
        _RECOUNT_WHEN_FULL_S)."""
        if more <= self.room(bound):
            return
        if time.monotonic() - self._recounted >= _RECOUNT_WHEN_FULL_S:
            self._recounted = time.monotonic()
            await self._run(self._recount)
            if more <= self.room(bound):
                return
        limit = self.max_events if bound is None else min(bound, self.max_events)
        raise SpoolFull(f"spool holds {self._depth + self._queued} events, its bound is {limit}")

    # -- the writer thread ---------------------------------------------------------------

    def _write_forever(self) -> None:
        conn, loop, stopped = self._conn, self._loop, self._stopped
        assert conn is not None and loop is not None and stopped is not None
        waiting: collections.deque[Append | Call | object] = collections.deque()
        next_prune = next_recount = time.monotonic() + min(_PRUNE_EVERY_S, _RECOUNT_EVERY_S)
        while True:
            if not waiting:  # idle: wait for work, or until the next upkeep is due
                with contextlib.suppress(queue.Empty):
                    due = min(next_prune, next_recount) - time.monotonic()
                    waiting.append(self._jobs.get(timeout=max(due, 0.0)))
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting.append(self._jobs.get_nowait())
            item = waiting.popleft() if waiting else None
            if item is STOP:
                break
            if isinstance(item, Append):
                group, size = [item], item.size
                while waiting and isinstance(waiting[0], Append) and size < _GROUP_BYTES:
                    size += waiting[0].size
                    group.append(waiting.popleft())  # type: ignore[arg-type]
                try:
                    results, error = self._transaction(conn, self._write_group, (group,)), None
                    for job, stored in zip(group, results, strict=True):
                        if job.per_visitor is None:
                            self._depth += sum(stored)
                        else:
                            self._held += sum(stored) - job.dropped
                except BaseException as exc:  # every waiter hears of it; the writer goes on
                    results, error = None, exc
                loop.call_soon_threadsafe(self._settle, group, results, error)
            elif isinstance(item, Call):
                try:
                    result, error = self._transaction(conn, item.fn, item.args), None
                    if item.after is not None:
                        item.after(result)
                except BaseException as exc:
                    result, error = None, exc
                loop.call_soon_threadsafe(resolve, item.fut, result, error)
            now = time.monotonic()
            if now >= next_recount:
                next_recount = now + _RECOUNT_EVERY_S
                try:
                    self._recount()
                except sqlite3.Error as exc:
                    log.warning("counting the spool's entries failed: %s", exc)
            if now >= next_prune:
                pruned = 0
                try:
                    pruned = self._transaction(conn, self._prune_seen, (int(time.time() * 1000),))
                except SpoolError as exc:
                    log.warning("pruning expired messageIds failed: %s", exc)
                next_prune = now + (_PRUNE_AGAIN_S if pruned >= _PRUNE_ROWS else _PRUNE_EVERY_S)
        conn.close()
        self._conn = None
        loop.call_soon_threadsafe(resolve, stopped, None, None)

    def _transaction(
        self, conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> T:
        try:
            result = fn(*args)
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                self._full_at = self._free_bytes()
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _settle(
        self, group: list[Append], results: list[list[bool]] | None, error: BaseException | None
    ) -> None:
        """On the event loop: account for a group's commit and answer its waiters."""
        self._queued -= sum(len(a.entries) for a in group if a.per_visitor is None)
        if results is None:
            count = sum(len(a.entries) for a in group)
            log.error("spool commit failed, %d events refused: %s", count, error)
            for a in group:
                resolve(a.fut, None, SpoolError(f"spool commit failed: {error}"))
            return
        self.commits += 1
        for a, stored in zip(group, results, strict=True):
            resolve(a.fut, stored, None)

    # -- ingest: group commit ------------------------------------------------------------

    async def append(
        self, entries: Sequence[EntryLike], received_at: int, bound: int | None = None
    ) -> list[bool]:
        if not entries:
            return []
        if self._closed or self._loop is None:
            raise SpoolError("spool is closed")
        if self._depth + self._queued + len(entries) > self.max_events or bound is not None:
            await self._check_bound(len(entries), bound)
        fut: asyncio.Future[list[bool]] = self._loop.create_future()
        self._put(Append(entries, received_at, self._queue_rows, fut))
        self._queued += len(entries)
        return await fut

    async def hold(
        self, entries: Sequence[EntryLike], received_at: int, per_visitor: int
    ) -> tuple[list[bool], int]:
        if not entries:
            return [], 0
        if self._closed or self._loop is None:
            raise SpoolError("spool is closed")
        fut: asyncio.Future[list[bool]] = self._loop.create_future()
        job = Append(entries, received_at, self._held_rows, fut, per_visitor)
        self._put(job)
        stored = await fut
        return stored, job.dropped

    def _write_group(self, group: list[Append]) -> list[list[bool]]:
        """One transaction for everything queued; per request, stored (True) or repeat.

        Runs on the writer thread, and holds the GIL as little as it can: SQLite releases it
        while a statement runs, and each table gets one statement for the whole group (see
        `sql.INSERT_EVENTS_JSON`), so the B-tree work runs on the other core. When no
        messageId repeats, which is nearly always, the rows go as each request's `meta` was
        made on append, with no Python work per row here."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        at = max(job.received_at for job in group)  # see sql.CLAIM_SEEN_JSON
        for held in (False, True):
            jobs = [job for job in group if (job.per_visitor is not None) is held]
            if not jobs:
                continue
            claims = sum(job.claims for job in jobs)
            if claims:
                ids = join_rows([job.ids for job in jobs if job.claims])
                claimed = conn.execute(sql.CLAIM_SEEN_JSON, (ids, at)).rowcount
                if claimed != claims:  # a messageId repeats
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    return self._write_without_repeats(conn, group)
            bodies = b"".join([e.body for job in jobs for e in job.entries])
            self._insert(conn, held, join_rows([job.meta for job in jobs]), bodies, jobs[0].start)
        results = [[True] * len(job.entries) for job in group]
        self._bound_held(conn, group, results)
        return results

    def _write_without_repeats(
        self, conn: sqlite3.Connection, group: list[Append]
    ) -> list[list[bool]]:
        """`_write_group` leaving out each entry whose messageId was claimed within the
        window, or by an entry before it in the group."""
        at = max(job.received_at for job in group)
        ids = [e.message_id for job in group for e in job.entries if e.client_id]
        found = conn.execute(
            sql.LOOKUP_SEEN_JSON, (orjson.dumps(ids), at - self._window)
        ).fetchone()[0]
        repeats = set(orjson.loads(found))
        results = []
        kept: dict[bool, tuple[sql.Rows, list[bytes], list[bytes], list[bytes]]] = {
            False: (sql.Rows(), [], [], []),
            True: (sql.Rows(), [], [], []),
        }
        for job in group:
            rows, metas, claims, bodies = kept[job.per_visitor is not None]
            entries = []
            stored = []
            for e in job.entries:
                if e.client_id:
                    if e.message_id in repeats:
                        stored.append(False)
                        continue
                    repeats.add(e.message_id)  # a second copy in this group is a repeat
                entries.append(e)
                bodies.append(e.body)
                stored.append(True)
            if entries:
                meta, _, job_ids, count = rows.meta(entries, job.received_at)
                metas.append(meta)
                if count:
                    claims.append(job_ids)
            results.append(stored)
        for held, (_, metas, claims, bodies) in kept.items():
            if claims:
                conn.execute(sql.REPLACE_SEEN_JSON, (join_rows(claims), at))
            if metas:
                self._insert(conn, held, join_rows(metas), b"".join(bodies), 0)
        self._bound_held(conn, group, results)
        return results

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, held: bool, meta: bytes, bodies: bytes, start: int
    ) -> None:
        statement = sql.INSERT_HELD_JSON if held else sql.INSERT_EVENTS_JSON
        conn.execute(statement, (meta, bodies, start))

    def _bound_held(
        self, conn: sqlite3.Connection, group: list[Append], results: list[list[bool]]
    ) -> None:
        """Drop each visitor's oldest held entries beyond the bound per visitor, then the
        oldest of any visitor beyond `max_events` in all: a site key is public, and a flood
        of made-up visitors must push out unidentified events, not shut real ones out."""
        held_jobs = [(job, stored) for job, stored in zip(group, results, strict=True)
                     if job.per_visitor is not None]  # fmt: skip
        if not held_jobs:
            return
        for job, _ in held_jobs:
            for visitor in {e.key for e in job.entries}:
                job.dropped += conn.execute(
                    "DELETE FROM held WHERE seq IN (SELECT seq FROM held WHERE key = ?"
                    " ORDER BY seq DESC LIMIT -1 OFFSET ?)",
                    (visitor, job.per_visitor),
                ).rowcount
        held = self._held + sum(sum(stored) - job.dropped for job, stored in held_jobs)
        if held > self.max_events:  # self._held is the writer's own count: see _recount
            held_jobs[0][0].dropped += conn.execute(
                "DELETE FROM held WHERE seq IN (SELECT seq FROM held ORDER BY seq LIMIT ?)",
                (held - self.max_events,),
            ).rowcount

    def _prune_seen(self, now: int) -> int:
        """Forget up to _PRUNE_ROWS messageIds claimed before the window; how many went."""
        cutoff = now - self._window
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        pruned: int = self._conn.execute(
            "DELETE FROM seen WHERE message_id IN"
            " (SELECT message_id FROM seen WHERE at < ? LIMIT ?)",
            (cutoff, _PRUNE_ROWS),
        ).rowcount
        return pruned

    # -- delivery side -------------------------------------------------------------------

    async def lease(
        self, limit: int, lease_ms: int, now: int, kind: str | None = None
    ) -> list[Record]:
        return await self._sql(self._leases.take, limit, lease_ms, now, kind)

    async def claim_delivery(self) -> None:
        # Leases live in this object (see leases.py): one forwarder per file, in every
        # process, held by an OS lock that dies with its process (see claim.py).
        self._delivery.acquire()

    async def release_delivery(self) -> None:
        self._delivery.release()

    async def reset_leases(self) -> int:
        # Leases are this process's own (see leases.py): what a dead forwarder held
        # died with it, so a new one starts with none.
        return self._leases.clear()

    async def ack(self, seqs: Sequence[int]) -> None:
        await self._run(self._delete_sync, list(seqs), None, after=self._removed)
        self._leases.drop(seqs)

    def _removed(self, removed: int) -> None:
        self._adjust(-removed)

    def _delete_sync(self, seqs: list[int], dead: tuple[str, int | None, str, int] | None) -> int:
        conn = self._conn
        assert conn is not None
        self._leases.changed(seqs)
        conn.execute("BEGIN IMMEDIATE")  # committed by _run, off the event loop
        removed = 0
        for start, size in sql.chunks(len(seqs)):
            part = seqs[start : start + size]
            marks = ", ".join("?" * size)
            if dead is not None:
                conn.execute(
                    f"INSERT OR REPLACE INTO dead ({sql.RECORD_COLS}, reason, status, detail,"
                    f" dead_at) SELECT {sql.RECORD_COLS}, ?, ?, ?, ? FROM events"
                    f" WHERE seq IN ({marks})",
                    [*dead, *part],
                )
            removed += conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", part).rowcount
        return removed

    async def release(self, seqs: Sequence[int], not_before: int) -> None:
        def work() -> None:
            assert self._conn is not None
            self._leases.changed(seqs)
            self._conn.execute("BEGIN IMMEDIATE")
            for start, size in sql.chunks(len(seqs)):
                self._conn.execute(
                    "UPDATE events SET attempts = attempts + 1, not_before = ?"
                    f" WHERE seq IN ({', '.join('?' * size)})",
                    [not_before, *seqs[start : start + size]],
                )

        await self._run(work)
        self._leases.drop(seqs)

    async def dead_letter(
        self, seqs: Sequence[int], reason: str, status: int | None, detail: str, now: int
    ) -> None:
        dead = (reason, status, detail, now)
        await self._run(self._delete_sync, list(seqs), dead, after=self._removed)
        self._leases.drop(seqs)

    # -- reading -------------------------------------------------------------------------

    async def pending(self, limit: int, after_seq: int = 0) -> list[Record]:
        return await self._sql(sql.pending, after_seq, limit)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return await self._sql(sql.dead_letters, limit)

    async def replay(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        now = int(time.time() * 1000)
        return await self._sql(sql.replay, seqs, reason, now, after=self._adjust)

    async def purge(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        return await self._sql(sql.purge, seqs, reason)

    async def dead_counts(self) -> dict[str, int]:
        return await self._sql(sql.dead_counts)

    async def stats(self) -> SpoolStats:
        def work() -> tuple[int, int | None, int, int]:
            assert self._conn is not None
            depth, oldest = self._conn.execute(
                "SELECT count(*), min(received_at) FROM events"
            ).fetchone()
            dead = self._conn.execute("SELECT count(*) FROM dead").fetchone()[0]
            held = self._conn.execute("SELECT count(*) FROM held").fetchone()[0]
            return depth, oldest, dead, held

        depth, oldest, dead, held = await self._run(work)
        in_flight = self._leases.in_flight(int(time.time() * 1000))
        return SpoolStats(depth, in_flight, dead, oldest, held)

    def _free_bytes(self) -> int:
        """Bytes free to this process where the spool file lives."""
        st = os.statvfs(self._dir)
        return st.f_bavail * st.f_frsize

    async def check(self) -> None:
        if self._closed:
            raise SpoolError("spool is closed")
        free = self._free_bytes()
        full_at = self._full_at
        if full_at is not None and free > full_at + _MIN_FREE_BYTES:
            self._full_at = full_at = None  # space came back: the next write will tell
        if full_at is not None or free < _MIN_FREE_BYTES:
            raise SpoolError(
                f"disk full: {free:,} bytes free in {self._dir}, where the spool is; events are"
                " refused until space is freed"
            )

        def work() -> None:
            assert self._conn is not None
            # BEGIN IMMEDIATE takes the write lock: proves the file is writable now.
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")

        await self._run(work)

    # -- anonymous visitors ----------------------------------------------------------------

    async def held(self, visitor: str) -> list[Record]:
        return await self._sql(sql.held, visitor)

    async def identify(
        self,
        visitor: str,
        contact: bytes,
        now: int,
        release: Sequence[int] = (),
        entries: Sequence[EntryLike] = (),
        bound: int | None = None,
    ) -> None:
        await self._check_bound(len(entries), bound)
        self._queued += len(entries)  # as append: concurrent identifies see each other
        try:
            await self._sql(
                sql.identify, visitor, contact, now, release, entries,
                after=lambda released: self._adjust(len(entries), -released),
            )  # fmt: skip
        finally:
            self._queued -= len(entries)

    async def contact_of(self, visitor: str, since: int) -> bytes | None:
        return await self._sql(sql.contact_of, visitor, since)

    async def contacts_of(self, visitors: Sequence[str], since: int) -> dict[str, bytes]:
        return await self._sql(sql.contacts_of, list(visitors), since) if visitors else {}

    async def expire_held(self, held_before: int, visitors_before: int) -> int:
        return await self._sql(
            sql.expire_held, held_before, visitors_before, self.max_events,
            after=lambda expired: self._adjust(0, -expired),
        )  # fmt: skip

    # -- carts -----------------------------------------------------------------------------

    async def cart(self, key: str) -> bytes | None:
        return await self._sql(cart_sql.cart, key)

    async def save_carts(self, saved: Mapping[str, bytes | None], now: int) -> None:
        if saved:
            await self._sql(cart_sql.save_carts, dict(saved), now)

    async def expire_carts(self, saved_before: int, max_carts: int) -> int:
        return await self._sql(cart_sql.expire_carts, saved_before, max_carts)

    # -- rejected calls --------------------------------------------------------------------

    async def keep_rejected(self, calls: Sequence[Rejected], keep: int) -> None:
        if calls:
            await self._sql(rejected_sql.keep_rejected, list(calls), keep)

    async def rejected(self, limit: int, reason: str | None = None) -> list[Rejected]:
        return await self._sql(rejected_sql.rejected, limit, reason)

    async def purge_rejected(self, reason: str | None = None) -> int:
        return await self._sql(rejected_sql.purge_rejected, reason)

    async def rejected_counts(self) -> dict[str, int]:
        return await self._sql(rejected_sql.rejected_counts)
