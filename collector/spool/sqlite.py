"""SQLite spool: the embedded default. One file, WAL journal, one writer thread.

Group commit: `append` puts its entries on a queue and waits; a single committer task
takes everything queued, writes it in one transaction on the spool's own thread, and
answers every waiter after the COMMIT. While one commit runs, the next group gathers, so
under load a commit (and its fsync) is shared by many requests. Every other operation
runs on the same thread, so the one connection is never used concurrently.
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
from .base import DeadLetter, EntryLike, Record, Spool, SpoolStats

log = logging.getLogger("collector.spool")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stale ack cannot hit a new row
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    event_time INTEGER,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_key ON events (key, seq);
CREATE TABLE IF NOT EXISTS seen (
    message_id TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_time ON seen (at);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    event_time INTEGER,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER,
    detail TEXT NOT NULL,
    dead_at INTEGER NOT NULL
);
"""

_RECORD_COLS = "seq, message_id, kind, key, event_type, received_at, event_time, body, attempts"
_RECORD_COLS_E = ", ".join("e." + c.strip() for c in _RECORD_COLS.split(","))
_INSERT = (
    "INSERT INTO events (message_id, kind, key, event_type, received_at, event_time, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Rows per multi-row statement: 2 variables each, far below SQLite's 32766-variable limit.
_CLAIM_CHUNK = 500
# How often expired messageIds are removed from the dedup table, and how many at a time
# (a bounded delete keeps one prune from holding the writer for long).
_PRUNE_EVERY_S = 60.0
_PRUNE_ROWS = 20_000


def _claim_sql(rows: int) -> str:
    # A messageId is claimed when it is new, or when its earlier sighting has left the
    # window; RETURNING names exactly the claimed ones.
    values = ",".join(["(?, ?)"] * rows)
    return (
        f"INSERT INTO seen (message_id, at) VALUES {values}"
        " ON CONFLICT (message_id) DO UPDATE SET at = excluded.at"
        " WHERE seen.at < excluded.at - ? RETURNING message_id"
    )


def _record(row: Sequence[Any]) -> Record:
    return Record(*row)


class SqliteSpool(Spool):
    def __init__(
        self, path: str, *, max_events: int, dedup_window_ms: int, synchronous: str = "full"
    ) -> None:
        self.path = path
        self.max_events = max_events
        self._window = dedup_window_ms
        self._sync = synchronous.upper()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[Sequence[EntryLike], int, asyncio.Future[list[bool]]]] = []
        self._queued = 0  # entries queued and not yet committed
        self._depth = 0  # entries committed and not yet acked or dead-lettered
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._committer: asyncio.Task[None] | None = None
        self._last_prune = time.monotonic()
        self._closed = False
        #: Transactions that committed appended events (tests check grouping with it).
        self.commits = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open_sync)
        self._committer = asyncio.create_task(self._commit_loop(), name="spool-committer")

    def _open_sync(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"{self.path}: could not switch to WAL journal (got {mode})")
        # FULL: the WAL is fsynced at each commit, so an acknowledged event survives a
        # power cut; NORMAL survives a process crash only.
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        self._depth = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        self._conn = conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc

    # -- ingest: group commit ------------------------------------------------------------

    async def append(self, entries: Sequence[EntryLike], received_at: int) -> list[bool]:
        if not entries:
            return []
        if self._closed:
            raise SpoolError("spool is closing")
        if self._depth + self._queued + len(entries) > self.max_events:
            raise SpoolFull(
                f"spool holds {self._depth + self._queued} events, its bound is {self.max_events}"
            )
        fut: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((entries, received_at, fut))
        self._queued += len(entries)
        self._wake.set()
        return await fut

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group, self._queue = self._queue, []
                count = sum(len(entries) for entries, _, _ in group)
                self._idle.clear()
                try:
                    results = await self._run(self._write_group, group)
                except SpoolError as exc:
                    log.error("spool commit failed, %d events refused: %s", count, exc)
                    for _, _, fut in group:
                        if not fut.done():
                            fut.set_exception(SpoolError(exc.message))
                    continue
                finally:
                    self._queued -= count
                    self._idle.set()
                self.commits += 1
                for (_, _, fut), stored in zip(group, results, strict=True):
                    self._depth += sum(stored)
                    if not fut.done():  # a waiter whose client went away
                        fut.set_result(stored)
            if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                with contextlib.suppress(SpoolError):
                    await self._run(self._prune_seen, int(time.time() * 1000) - self._window)

    def _write_group(
        self, group: Sequence[tuple[Sequence[EntryLike], int, object]]
    ) -> list[list[bool]]:
        conn = self._conn
        assert conn is not None
        claims: list[Any] = []
        for entries, received_at, _ in group:
            for e in entries:
                if e.client_id:
                    claims.append(e.message_id)
                    claims.append(received_at)
        conn.execute("BEGIN IMMEDIATE")
        try:
            claimed: set[str] = set()
            for start in range(0, len(claims), 2 * _CLAIM_CHUNK):
                chunk = claims[start : start + 2 * _CLAIM_CHUNK]
                cur = conn.execute(_claim_sql(len(chunk) // 2), [*chunk, self._window])
                claimed.update(row[0] for row in cur)
            rows = []
            results = []
            for entries, received_at, _ in group:
                stored = []
                for e in entries:
                    if e.client_id:
                        if e.message_id not in claimed:
                            stored.append(False)
                            continue
                        claimed.discard(e.message_id)  # a second copy in this group is a repeat
                    rows.append(
                        (
                            e.message_id,
                            e.kind,
                            e.key,
                            e.event_type,
                            received_at,
                            e.event_time,
                            e.body,
                        )
                    )
                    stored.append(True)
                results.append(stored)
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _prune_seen(self, cutoff: int) -> None:
        assert self._conn is not None
        self._conn.execute(
            "DELETE FROM seen WHERE message_id IN"
            " (SELECT message_id FROM seen WHERE at < ? LIMIT ?)",
            (cutoff, _PRUNE_ROWS),
        )

    # -- delivery side -------------------------------------------------------------------

    async def lease(self, limit: int, lease_ms: int, now: int) -> list[Record]:
        return await self._run(self._lease_sync, limit, lease_ms, now)

    def _lease_sync(self, limit: int, lease_ms: int, now: int) -> list[Record]:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                f"SELECT {_RECORD_COLS_E} FROM events e JOIN (SELECT min(seq) AS head FROM events GROUP BY key) h"
                " ON e.seq = h.head"
                " WHERE e.lease_until <= ? AND e.not_before <= ? ORDER BY e.seq LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE events SET lease_until = ? WHERE seq = ?",
                [(now + lease_ms, row[0]) for row in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [_record(row) for row in rows]

    async def ack(self, seqs: Sequence[int]) -> None:
        removed = await self._run(self._delete_sync, list(seqs), None)
        self._depth -= removed

    def _delete_sync(self, seqs: list[int], dead: tuple[str, int | None, str, int] | None) -> int:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if dead is not None:
                conn.executemany(
                    f"INSERT OR REPLACE INTO dead ({_RECORD_COLS}, reason, status, detail, dead_at)"
                    f" SELECT {_RECORD_COLS}, ?, ?, ?, ? FROM events WHERE seq = ?",
                    [(*dead, seq) for seq in seqs],
                )
            cur = conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
            removed = cur.rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return removed

    async def release(self, seqs: Sequence[int], not_before: int) -> None:
        def work() -> None:
            assert self._conn is not None
            with self._conn:
                self._conn.executemany(
                    "UPDATE events SET attempts = attempts + 1, not_before = ?, lease_until = 0"
                    " WHERE seq = ?",
                    [(not_before, s) for s in seqs],
                )

        await self._run(work)

    async def dead_letter(
        self, seqs: Sequence[int], reason: str, status: int | None, detail: str, now: int
    ) -> None:
        removed = await self._run(self._delete_sync, list(seqs), (reason, status, detail, now))
        self._depth -= removed

    # -- reading -------------------------------------------------------------------------

    async def pending(self, limit: int, after_seq: int = 0) -> list[Record]:
        def work() -> list[Record]:
            assert self._conn is not None
            rows = self._conn.execute(
                f"SELECT {_RECORD_COLS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            return [_record(r) for r in rows]

        return await self._run(work)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        def work() -> list[DeadLetter]:
            assert self._conn is not None
            rows = self._conn.execute(
                f"SELECT {_RECORD_COLS}, reason, status, detail, dead_at FROM dead"
                " ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [DeadLetter(_record(r[:9]), r[9], r[10], r[11], r[12]) for r in rows]

        return await self._run(work)

    async def stats(self) -> SpoolStats:
        def work() -> SpoolStats:
            assert self._conn is not None
            now = int(time.time() * 1000)
            depth, in_flight, oldest = self._conn.execute(
                "SELECT count(*), coalesce(sum(lease_until > ?), 0), min(received_at) FROM events",
                (now,),
            ).fetchone()
            dead = self._conn.execute("SELECT count(*) FROM dead").fetchone()[0]
            return SpoolStats(depth, in_flight, dead, oldest)

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
