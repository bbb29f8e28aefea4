"""SQLite spool: the embedded default. One file, WAL journal, group commit.

`append` queues its entries and waits. One committer task takes everything queued,
writes it in one transaction, and answers every waiter after the COMMIT; appends that
arrive meanwhile ride on the next commit. Under load one commit (and its fsync) is
shared by many requests. Statements run on the event loop (microseconds of CPU per
row, and no GIL hand-off between threads, which on this class of machine cost more
than the statements); COMMIT, which waits for the disk, runs on a helper thread, so
the loop never waits on fsync. One transaction at a time holds the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import SpoolError, SpoolFull
from . import sqlite_sql as sql
from .base import DeadLetter, EntryLike, Record, Spool, SpoolStats

log = logging.getLogger("collector.spool")

T = TypeVar("T")

# How often expired messageIds are removed from the dedup table, and how many at a time
# (a bounded delete keeps one prune from holding the writer for long).
_PRUNE_EVERY_S = 60.0
# A lease looks at most this many waiting entries for key heads.
_LEASE_SCAN = 100_000
_PRUNE_ROWS = 20_000


class _Append:
    """One request's entries waiting for the next group commit.

    `per_visitor` is None for the queue; for anonymous visitors' entries (`hold`) it is the
    bound per visitor, and `dropped` says how many older held entries the bound removed."""

    __slots__ = ("dropped", "entries", "fut", "per_visitor", "received_at")

    def __init__(
        self,
        entries: Sequence[EntryLike],
        received_at: int,
        fut: asyncio.Future[list[bool]],
        per_visitor: int | None = None,
    ) -> None:
        self.entries = entries
        self.received_at = received_at
        self.fut = fut
        self.per_visitor = per_visitor
        self.dropped = 0


class SqliteSpool(Spool):
    def __init__(
        self, path: str, *, max_events: int, dedup_window_ms: int, synchronous: str = "full"
    ) -> None:
        self.path = path
        self.max_events = max_events
        self._window = dedup_window_ms
        self._sync = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        # Statements run on the event loop: they are CPU work of microseconds per row,
        # and running them here costs no hand-off of the GIL. Only COMMIT, which waits
        # for the disk (fsync), runs on this one thread; while it does, the loop serves
        # requests and the next group gathers. The lock keeps one transaction at a time
        # on the connection.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-fsync")
        self._lock = asyncio.Lock()
        self._queue: list[_Append] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._queued = 0  # entries queued and not yet committed
        self._depth = 0  # entries committed and not yet acked or dead-lettered
        self._held = 0  # anonymous visitors' entries committed and held
        self._held_queued = 0
        self._leases: dict[int, int] = {}  # seq -> lease expiry (epoch ms), this process's
        self._last_prune = time.monotonic()
        self._closed = False
        #: Transactions that committed appended events (tests check grouping with it).
        self.commits = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._open_sync()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        self._committer = asyncio.create_task(self._commit_loop(), name="spool-committer")

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
        conn.executescript(sql.SCHEMA)
        self._depth = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        self._held = conn.execute("SELECT count(*) FROM held").fetchone()[0]
        self._conn = conn

    async def close(self) -> None:
        """Commit everything already appended, then close the file."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._committer is not None:
            await self._committer  # it returns once the queue is empty
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the connection; if it opened a transaction, COMMIT it off-loop."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise SpoolError("spool is closed")
            try:
                result = fn(*args)
                if conn.in_transaction:
                    await self._off_loop(conn.execute, "COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise SpoolError(f"spool {self.path}: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    async def _sql(self, fn: Callable[..., T], *args: Any) -> T:
        """`_run` one of `sqlite_sql`'s transactions, which take the connection first."""
        return await self._run(lambda: fn(self._conn, *args))

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        cancelled = False
        while True:
            try:
                await asyncio.shield(fut)  # the connection is busy until the thread is done
                break
            except asyncio.CancelledError:
                cancelled = True
                if fut.done():
                    break
        if cancelled:
            raise asyncio.CancelledError

    # -- ingest: group commit ------------------------------------------------------------

    async def append(self, entries: Sequence[EntryLike], received_at: int) -> list[bool]:
        if not entries:
            return []
        if self._closed or self._conn is None:
            raise SpoolError("spool is closed")
        if self._depth + self._queued + len(entries) > self.max_events:
            raise SpoolFull(
                f"spool holds {self._depth + self._queued} events, its bound is {self.max_events}"
            )
        fut: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queued += len(entries)
        self._queue.append(_Append(entries, received_at, fut))
        self._wake.set()
        return await fut

    async def hold(
        self, entries: Sequence[EntryLike], received_at: int, per_visitor: int
    ) -> tuple[list[bool], int]:
        if not entries:
            return [], 0
        if self._closed or self._conn is None:
            raise SpoolError("spool is closed")
        if self._held + self._held_queued + len(entries) > self.max_events:
            raise SpoolFull(
                f"spool holds {self._held + self._held_queued} anonymous events,"
                f" its bound is {self.max_events}"
            )
        fut: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        job = _Append(entries, received_at, fut, per_visitor)
        self._held_queued += len(entries)
        self._queue.append(job)
        self._wake.set()
        stored = await fut
        return stored, job.dropped

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group, self._queue = self._queue, []
                count = sum(len(a.entries) for a in group if a.per_visitor is None)
                held = sum(len(a.entries) for a in group if a.per_visitor is not None)
                try:
                    results = await self._run(self._write_group, group)
                except Exception as exc:  # every waiter hears of it; the committer goes on
                    log.error("spool commit failed, %d events refused: %s", count, exc)
                    for a in group:
                        if not a.fut.done():
                            a.fut.set_exception(SpoolError(f"spool commit failed: {exc}"))
                    continue
                finally:
                    self._queued -= count
                    self._held_queued -= held
                self.commits += 1
                for a, stored in zip(group, results, strict=True):
                    if a.per_visitor is None:
                        self._depth += sum(stored)
                    else:
                        self._held += sum(stored) - a.dropped
                    if not a.fut.done():  # a waiter whose client went away
                        a.fut.set_result(stored)
            if self._closed:
                return
            if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                with contextlib.suppress(SpoolError):
                    await self._run(self._prune_seen, int(time.time() * 1000) - self._window)

    def _write_group(self, group: list[_Append]) -> list[list[bool]]:
        """One transaction for everything queued; per request, stored (True) or repeat."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")  # committed by _run, off the event loop
        ids = [e.message_id for job in group for e in job.entries if e.client_id]
        cutoff = group[-1].received_at - self._window
        repeats = self._known_ids(conn, ids, cutoff) if ids else set()
        rows: list[Any] = []
        held: list[Any] = []
        claims: list[Any] = []
        results = []
        for job in group:
            received_at = job.received_at
            out = rows if job.per_visitor is None else held
            stored = []
            for e in job.entries:
                if e.client_id:
                    if e.message_id in repeats:
                        stored.append(False)
                        continue
                    repeats.add(e.message_id)  # a second copy in this group is a repeat
                    claims += (e.message_id, received_at)
                out += (e.message_id, e.kind, e.key, e.event_type, received_at,
                        e.event_time, e.body)  # fmt: skip
                stored.append(True)
            results.append(stored)
        for start, size in sql.chunks(len(claims) // 2):
            conn.execute(sql.INSERT_SEEN[size], claims[start * 2 : (start + size) * 2])
        for start, size in sql.chunks(len(rows) // 7):
            conn.execute(sql.INSERT_EVENTS[size], rows[start * 7 : (start + size) * 7])
        for start, size in sql.chunks(len(held) // 7):
            conn.execute(sql.INSERT_HELD[size], held[start * 7 : (start + size) * 7])
        for job in group:
            if job.per_visitor is not None:
                for visitor in {e.key for e in job.entries}:
                    job.dropped += conn.execute(
                        "DELETE FROM held WHERE seq IN (SELECT seq FROM held WHERE key = ?"
                        " ORDER BY seq DESC LIMIT -1 OFFSET ?)",
                        (visitor, job.per_visitor),
                    ).rowcount
        return results

    @staticmethod
    def _known_ids(conn: sqlite3.Connection, ids: list[str], cutoff: int) -> set[str]:
        """The ids among `ids` already claimed within the window (seen at or after cutoff).

        The cutoff comes from the group's newest request: a group spans milliseconds, far
        below any useful window."""
        known: set[str] = set()
        for start, size in sql.chunks(len(ids)):
            cur = conn.execute(sql.LOOKUP_SEEN[size], [cutoff, *ids[start : start + size]])
            known.update(row[0] for row in cur)
        return known

    def _prune_seen(self, cutoff: int) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute(
            "DELETE FROM seen WHERE message_id IN"
            " (SELECT message_id FROM seen WHERE at < ? LIMIT ?)",
            (cutoff, _PRUNE_ROWS),
        )

    # -- delivery side -------------------------------------------------------------------

    async def lease(self, limit: int, lease_ms: int, now: int) -> list[Record]:
        return await self._run(self._lease_sync, limit, lease_ms, now)

    def _lease_sync(self, limit: int, lease_ms: int, now: int) -> list[Record]:
        # Walk the waiting entries in append order and take each key's first one if it
        # may go now. Without a (key, seq) index (it would halve ingest speed) the walk is
        # linear, but it stops once `limit` heads are found or _LEASE_SCAN rows are seen.
        # Leases live in this process, not in the file: a lease is only ever reset when
        # its forwarder dies, so writing (and fsyncing) it would buy nothing.
        conn = self._conn
        assert conn is not None
        leases = self._leases
        seen_keys: set[str] = set()
        chosen: list[int] = []
        cur = conn.execute(
            "SELECT seq, key, not_before FROM events ORDER BY seq LIMIT ?", (_LEASE_SCAN,)
        )
        for seq, key, not_before in cur:
            if key in seen_keys:
                continue
            seen_keys.add(key)
            if not_before <= now and leases.get(seq, 0) <= now:
                chosen.append(seq)
                if len(chosen) == limit:
                    break
        cur.close()
        records = []
        for seq in chosen:
            leases[seq] = now + lease_ms
        for start, size in sql.chunks(len(chosen)):
            part = chosen[start : start + size]
            records += conn.execute(
                f"SELECT {sql.RECORD_COLS} FROM events WHERE seq IN ({', '.join('?' * size)})",
                part,
            ).fetchall()
        records.sort(key=lambda r: r[0])
        return [sql.record(row) for row in records]

    async def reset_leases(self) -> int:
        # Leases are this process's own (see _lease_sync): what a dead forwarder held
        # died with it, so a new one starts with none.
        held = len(self._leases)
        self._leases.clear()
        return held

    async def ack(self, seqs: Sequence[int]) -> None:
        removed = await self._run(self._delete_sync, list(seqs), None)
        self._depth -= removed
        self._unlease(seqs)

    def _unlease(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._leases.pop(seq, None)

    def _delete_sync(self, seqs: list[int], dead: tuple[str, int | None, str, int] | None) -> int:
        conn = self._conn
        assert conn is not None
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
            self._conn.execute("BEGIN IMMEDIATE")
            for start, size in sql.chunks(len(seqs)):
                self._conn.execute(
                    "UPDATE events SET attempts = attempts + 1, not_before = ?"
                    f" WHERE seq IN ({', '.join('?' * size)})",
                    [not_before, *seqs[start : start + size]],
                )

        await self._run(work)
        self._unlease(seqs)

    async def dead_letter(
        self, seqs: Sequence[int], reason: str, status: int | None, detail: str, now: int
    ) -> None:
        removed = await self._run(self._delete_sync, list(seqs), (reason, status, detail, now))
        self._depth -= removed
        self._unlease(seqs)

    # -- reading -------------------------------------------------------------------------

    async def pending(self, limit: int, after_seq: int = 0) -> list[Record]:
        return await self._sql(sql.pending, after_seq, limit)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return await self._sql(sql.dead_letters, limit)

    async def replay(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        moved = await self._sql(sql.replay, seqs, reason, int(time.time() * 1000))
        self._depth += moved
        return moved

    async def purge(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        return await self._sql(sql.purge, seqs, reason)

    async def dead_counts(self) -> dict[str, int]:
        return await self._sql(sql.dead_counts)

    async def stats(self) -> SpoolStats:
        def work() -> SpoolStats:
            assert self._conn is not None
            now = int(time.time() * 1000)
            depth, oldest = self._conn.execute(
                "SELECT count(*), min(received_at) FROM events"
            ).fetchone()
            in_flight = sum(1 for until in self._leases.values() if until > now)
            dead = self._conn.execute("SELECT count(*) FROM dead").fetchone()[0]
            held = self._conn.execute("SELECT count(*) FROM held").fetchone()[0]
            return SpoolStats(depth, in_flight, dead, oldest, held)

        return await self._run(work)

    async def check(self) -> None:
        if self._closed:
            raise SpoolError("spool is closed")

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
    ) -> None:
        released = await self._sql(sql.identify, visitor, contact, now, release, entries)
        self._held -= released
        self._depth += len(entries)

    async def contact_of(self, visitor: str, since: int) -> bytes | None:
        return await self._sql(sql.contact_of, visitor, since)

    async def expire_held(self, held_before: int, visitors_before: int) -> int:
        expired = await self._sql(sql.expire_held, held_before, visitors_before)
        self._held -= expired
        return expired
