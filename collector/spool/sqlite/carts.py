"""The SQLite spool's remembered carts (`CartStore`): one row per cart, its bytes as given."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS carts (
    key TEXT PRIMARY KEY,
    cart BLOB NOT NULL,
    at INTEGER NOT NULL  -- epoch ms of the last save
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS carts_by_time ON carts (at);
"""


def cart(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT cart FROM carts WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])


def save_carts(conn: sqlite3.Connection, carts: Mapping[str, bytes | None], now: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    saved = [(key, value, now) for key, value in carts.items() if value is not None]
    gone = [(key,) for key, value in carts.items() if value is None]
    conn.executemany("INSERT OR REPLACE INTO carts (key, cart, at) VALUES (?, ?, ?)", saved)
    conn.executemany("DELETE FROM carts WHERE key = ?", gone)


def expire_carts(conn: sqlite3.Connection, saved_before: int, max_carts: int) -> int:
    conn.execute("BEGIN IMMEDIATE")
    expired: int = conn.execute("DELETE FROM carts WHERE at < ?", (saved_before,)).rowcount
    over = conn.execute("SELECT count(*) FROM carts").fetchone()[0] - max_carts
    if over > 0:  # made-up shoppers by the thousand must not fill the disk
        expired += conn.execute(
            "DELETE FROM carts WHERE key IN (SELECT key FROM carts ORDER BY at LIMIT ?)", (over,)
        ).rowcount
    return expired
