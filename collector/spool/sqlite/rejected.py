"""The SQLite spool's rejected calls (`RejectedLog`): the newest kept, oldest first."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import Rejected

SCHEMA = """
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    message_id TEXT,
    body BLOB NOT NULL,
    at INTEGER NOT NULL
);
"""
_COLS = "source, reason, detail, message_id, body, at"


def keep_rejected(conn: sqlite3.Connection, calls: Sequence[Rejected], keep: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        f"INSERT INTO rejected ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
        [(c.source, c.reason, c.detail, c.message_id, c.body, c.at) for c in calls],
    )
    # seqs only grow, so the newest `keep` have the highest: a range delete on the key.
    conn.execute("DELETE FROM rejected WHERE seq <= (SELECT max(seq) FROM rejected) - ?", (keep,))


def rejected(conn: sqlite3.Connection, limit: int, reason: str | None) -> list[Rejected]:
    where, args = ("WHERE reason = ?", [reason]) if reason is not None else ("", [])
    rows = conn.execute(
        f"SELECT {_COLS}, seq FROM rejected {where} ORDER BY seq LIMIT ?", [*args, limit]
    ).fetchall()
    return [Rejected(s, r, d, m, bytes(b), at, seq) for s, r, d, m, b, at, seq in rows]


def purge_rejected(conn: sqlite3.Connection, reason: str | None) -> int:
    conn.execute("BEGIN IMMEDIATE")
    where, args = ("WHERE reason = ?", [reason]) if reason is not None else ("", [])
    purged: int = conn.execute(f"DELETE FROM rejected {where}", args).rowcount
    return purged


def rejected_counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT reason, count(*) FROM rejected GROUP BY reason")
    return {reason: count for reason, count in rows}
