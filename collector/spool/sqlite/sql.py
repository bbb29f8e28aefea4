"""The SQL of the SQLite spool: its schema, its statements, and the transactions that need
nothing of the spool's state (operators' dead-letter commands, anonymous visitors).

Each transaction takes the connection first and is run by `SqliteSpool._sql`, which holds
the connection and commits what the function began (off the event loop).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import orjson

from ..base import DeadLetter, EntryLike, Record

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
    not_before INTEGER NOT NULL DEFAULT 0,  -- leases are kept in memory, see leases.py
    after_key TEXT  -- Record.after: waits for this key's earlier entries (see leases.py)
);
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
    dead_at INTEGER NOT NULL,
    after_key TEXT
);
-- Anonymous visitors' entries, keyed by visitor, until they identify (or expire).
CREATE TABLE IF NOT EXISTS held (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    event_time INTEGER,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS held_by_visitor ON held (key, seq);
CREATE TABLE IF NOT EXISTS visitors (
    visitor TEXT PRIMARY KEY,
    contact BLOB NOT NULL,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS visitors_by_time ON visitors (at);
"""

# Columns added to a table since the first spool files were written: `upgrade` adds them
# to an older file (as NULL: what its entries were).
ADDED_COLUMNS = (("events", "after_key", "TEXT"), ("dead", "after_key", "TEXT"))

RECORD_COLS = (
    "seq, message_id, kind, key, event_type, received_at, event_time, body, attempts, after_key"
)
EVENT_COLS = "message_id, kind, key, event_type, received_at, event_time, body"
# Statements over many seqs come in power-of-two sizes only, so few distinct statements
# stay in the statement cache and n seqs take at most log2(n) statements.
CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)


def chunks(n: int) -> list[tuple[int, int]]:
    """Split n rows into (start, size) pieces of the sizes in CHUNKS."""
    out = []
    start = 0
    for size in CHUNKS:
        while n - start >= size:
            out.append((start, size))
            start += size
    return out


# A group commit's rows reach SQLite as three parameters whatever their number: ?1 a JSON
# array with one array per row, [message_id, kind, key, event_type, received_at,
# event_time, offset, length, after] (held rows have no `after`: they are normalized
# again when released); ?2 the rows' bodies end to end; ?3 the offset of the first
# of them. Offsets count the bodies of all appends so far (see `Rows`), so a row keeps its
# offset from its append to its commit, whatever else shares the group (`substr` counts
# bytes in a blob, from 1). One statement per table then writes them all while SQLite
# runs without the GIL. Rows are written in array order, so they get their seqs in the
# order they were queued.
#
# Each reference to json_each's `value` renders the row's array as text again, and each
# `->>` parses what it is given: the rows are first MATERIALIZED as text, once each, which
# takes 11% off the instructions of a group's writing (callgrind, groups of 3,000).
INSERT_EVENTS_JSON, INSERT_HELD_JSON = (
    f"INSERT INTO {table} ({EVENT_COLS}{more_cols})"
    " WITH r(k, v) AS MATERIALIZED (SELECT key, value FROM json_each(?1))"
    " SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, substr(?2, 1 + (v->>6) - ?3, v->>7)"
    f"{more_values} FROM r ORDER BY k"
    for table, more_cols, more_values in (("events", ", after_key", ", v->>8"), ("held", "", ""))
)
# Claims the client's messageIds of ?1, a flat JSON array of them (json_each hands each
# one over as it is, with nothing to render or parse: 19% fewer instructions per event
# than reading them out of the rows), at ?2: the newest receipt time in the group, so
# that a claim never ends before its window does. One already claimed is left as it is,
# so the rowcount falls short when any id repeats; the writer then takes the careful way
# (LOOKUP_SEEN_JSON, then REPLACE_SEEN_JSON).
CLAIM_SEEN_JSON = "INSERT OR IGNORE INTO seen (message_id, at) SELECT value, ?2 FROM json_each(?1)"
# The same, replacing claims older than the window.
REPLACE_SEEN_JSON = CLAIM_SEEN_JSON.replace("OR IGNORE", "OR REPLACE")
# The ids of ?1 (a JSON array of messageIds) claimed at or after ?2, as a JSON array.
LOOKUP_SEEN_JSON = (
    "SELECT json_group_array(message_id) FROM seen"
    " WHERE message_id IN (SELECT value FROM json_each(?1)) AND at >= ?2"
)


class Rows:
    """Numbers the bodies of one kind of rows (queued or held) as one stream, from 0."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0

    def meta(self, entries: Sequence[EntryLike], received_at: int) -> tuple[bytes, int, bytes, int]:
        """For `entries`: ?1 of the row statements above (one C call for a request's rows),
        the offset of their first body, and the ?1 of CLAIM_SEEN_JSON with its length (the
        entries that carry the client's messageId)."""
        start = self.offset
        if len(entries) == 1:  # a single event per request: without the list machinery
            e = entries[0]
            length = len(e.body)
            self.offset = start + length
            row = (e.message_id, e.kind, e.key, e.event_type, received_at, e.event_time,
                   start, length, e.after)  # fmt: skip
            if e.client_id:
                return orjson.dumps((row,)), start, orjson.dumps((e.message_id,)), 1
            return orjson.dumps((row,)), start, b"[]", 0
        lengths = [len(e.body) for e in entries]
        offsets = list(accumulate(lengths, initial=start))
        self.offset = offsets[-1]
        meta = orjson.dumps(
            [
                (e.message_id, e.kind, e.key, e.event_type, received_at, e.event_time,
                 offset, length, e.after)
                for e, offset, length in zip(entries, offsets, lengths, strict=False)
            ]
        )  # fmt: skip
        ids = [e.message_id for e in entries if e.client_id]
        return meta, start, orjson.dumps(ids), len(ids)


def record(row: Sequence[Any]) -> Record:
    return Record(*row)


def upgrade(conn: sqlite3.Connection) -> None:
    """Add `ADDED_COLUMNS` to a file an older collector made. In one write transaction:
    two processes that open the same old file do not both add a column."""
    conn.execute("BEGIN IMMEDIATE")
    for table, column, decl in ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    conn.execute("COMMIT")


# -- reading and dead letters -------------------------------------------------------------


def pending(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[Record]:
    rows = conn.execute(
        f"SELECT {RECORD_COLS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
    ).fetchall()
    return [record(r) for r in rows]


def dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    rows = conn.execute(
        f"SELECT {RECORD_COLS}, reason, status, detail, dead_at FROM dead ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    return [DeadLetter(record(r[:10]), r[10], r[11], r[12], r[13]) for r in rows]


def _dead_filter(seqs: Sequence[int] | None, reason: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1"]
    args: list[Any] = []
    if seqs is not None:
        clauses.append(f"seq IN ({', '.join('?' * len(seqs))})" if seqs else "0")
        args += list(seqs)
    if reason is not None:
        clauses.append("reason = ?")
        args.append(reason)
    return " AND ".join(clauses), args


def replay(
    conn: sqlite3.Connection, seqs: Sequence[int] | None, reason: str | None, now: int
) -> int:
    where, args = _dead_filter(seqs, reason)
    conn.execute("BEGIN IMMEDIATE")
    moved: int = conn.execute(
        f"INSERT INTO events ({EVENT_COLS}, after_key)"
        " SELECT message_id, kind, key, event_type, ?, event_time, body, after_key"
        f" FROM dead WHERE {where} ORDER BY seq",
        [now, *args],
    ).rowcount
    conn.execute(f"DELETE FROM dead WHERE {where}", args)
    return moved


def purge(conn: sqlite3.Connection, seqs: Sequence[int] | None, reason: str | None) -> int:
    where, args = _dead_filter(seqs, reason)
    conn.execute("BEGIN IMMEDIATE")
    purged: int = conn.execute(f"DELETE FROM dead WHERE {where}", args).rowcount
    return purged


def dead_counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT reason, count(*) FROM dead GROUP BY reason")
    return {reason: count for reason, count in rows}


# -- anonymous visitors -----------------------------------------------------------------------


def held(conn: sqlite3.Connection, visitor: str) -> list[Record]:
    rows = conn.execute(
        "SELECT seq, message_id, kind, key, event_type, received_at, event_time, body, 0"
        " FROM held WHERE key = ? ORDER BY seq",
        (visitor,),
    ).fetchall()
    return [record(r) for r in rows]


def identify(
    conn: sqlite3.Connection,
    visitor: str,
    contact: bytes,
    now: int,
    release: Sequence[int],
    entries: Sequence[EntryLike],
) -> int:
    """Remember who the visitor is, delete the released held entries and append what they
    became, in one transaction; return how many held entries were deleted."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT OR REPLACE INTO visitors (visitor, contact, at) VALUES (?, ?, ?)",
        (visitor, contact, now),
    )
    released = 0
    for start, size in chunks(len(release)):
        released += conn.execute(
            f"DELETE FROM held WHERE seq IN ({', '.join('?' * size)})",
            list(release[start : start + size]),
        ).rowcount
    rows = [
        (e.message_id, e.kind, e.key, e.event_type, now, e.event_time, e.body, e.after)
        for e in entries
    ]
    conn.executemany(
        f"INSERT INTO events ({EVENT_COLS}, after_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
    )
    return released


def contact_of(conn: sqlite3.Connection, visitor: str, since: int) -> bytes | None:
    row = conn.execute(
        "SELECT contact FROM visitors WHERE visitor = ? AND at >= ?", (visitor, since)
    ).fetchone()
    return None if row is None else bytes(row[0])


def contacts_of(conn: sqlite3.Connection, visitors: Sequence[str], since: int) -> dict[str, bytes]:
    rows = conn.execute(
        "SELECT visitor, contact FROM visitors"
        " WHERE visitor IN (SELECT value FROM json_each(?)) AND at >= ?",
        (orjson.dumps(list(visitors)), since),
    )
    return {visitor: bytes(contact) for visitor, contact in rows}


def expire_held(
    conn: sqlite3.Connection,
    held_before: int,
    visitors_before: int,
    max_visitors: int,
    scan: int = 20_000,
) -> int:
    """Delete held entries received before `held_before` (at most `scan` per call), and
    visitors identified before `visitors_before` or beyond the newest `max_visitors`;
    return how many held entries went."""
    conn.execute("BEGIN IMMEDIATE")
    # Held entries are in arrival order, so the expired ones are a prefix: walk it (bounded,
    # like the dedup prune) instead of scanning the whole table.
    oldest = conn.execute("SELECT seq, received_at FROM held ORDER BY seq LIMIT ?", (scan,))
    last = None
    for seq, received_at in oldest:
        if received_at >= held_before:
            break
        last = seq
    oldest.close()
    expired = 0
    if last is not None:
        expired = conn.execute(
            "DELETE FROM held WHERE seq <= ? AND received_at < ?", (last, held_before)
        ).rowcount
    conn.execute("DELETE FROM visitors WHERE at < ?", (visitors_before,))
    over = conn.execute("SELECT count(*) FROM visitors").fetchone()[0] - max_visitors
    if over > 0:  # made-up visitors, identified by the thousand, must not fill the disk
        conn.execute(
            "DELETE FROM visitors WHERE visitor IN"
            " (SELECT visitor FROM visitors ORDER BY at LIMIT ?)",
            (over,),
        )
    return expired
