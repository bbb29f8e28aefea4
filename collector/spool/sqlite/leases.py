"""The SQLite spool's leases: which waiting entries this process's forwarder holds, and
the walk that hands out each key's first entry.

Leases live in the process, not in the file: a lease is only ever reset when its
forwarder dies, so writing (and fsyncing) it would buy nothing. `take` and `changed` run
on the spool's writer thread; `drop` and `clear` on the event loop (each a dict operation,
one step under the GIL); `in_flight` copies the values in one step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import Record
from . import sql

# A lease looks at most this many waiting entries for key heads, after the blocked prefix
# (see `Leases.take`), which remembers at most _BLOCKED_KEYS keys.
_LEASE_SCAN = 100_000
_BLOCKED_KEYS = 10_000
_FOREVER = 1 << 62


class Leases:
    __slots__ = ("_blocked", "_until")

    def __init__(self) -> None:
        self._until: dict[int, int] = {}  # seq -> lease expiry (epoch ms)
        # The blocked prefix: (last seq, keys, until): every waiting entry up to that seq
        # is of one of these keys, whose first entries cannot go before `until` (each
        # waits for a retry, or for an earlier entry of its `after` key that does).
        self._blocked: tuple[int, set[str], int] | None = None

    def take(
        self, conn: sqlite3.Connection, limit: int, lease_ms: int, now: int, kind: str | None
    ) -> list[Record]:
        """Lease up to `limit` key heads that may go now (of `kind`, if given), oldest first.

        Walks the waiting entries in append order and takes each key's first one if it
        may go now: not leased, not waiting for a retry, and, when it has an `after` key,
        no entry of that key was walked before it (the walk sees every waiting entry
        before it; the blocked prefix's keys stand for the entries it skips). Without a
        (key, seq) index (it would halve ingest speed) the walk is linear, but it stops
        once `limit` heads are found or _LEASE_SCAN rows are seen.

        The walk starts after the blocked prefix: the entries at the front whose keys all
        wait for a retry. Without it, one key stuck in retries with _LEASE_SCAN entries
        behind its head would stop every other key for as long as its retries last. The
        prefix grows with each walk, and is forgotten when its first retry is due or an
        entry in it is deleted or released (`changed`). An entry held back by its `after`
        key joins the prefix too when that key is in it (an order behind its contact's
        retry): it cannot go before that key's entries do.
        """
        leases = self._until
        after, until = 0, _FOREVER
        blocked_keys: set[str] = set()
        if self._blocked is not None and now < self._blocked[2]:
            after, blocked_keys, until = self._blocked
        seen_keys = set(blocked_keys)
        growing = True  # every entry walked so far is of a blocked key
        chosen: list[int] = []
        cur = conn.execute(
            "SELECT seq, key, not_before, kind, after_key FROM events"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, _LEASE_SCAN),
        )
        for seq, key, not_before, row_kind, after_key in cur:
            if key in seen_keys:
                if growing:
                    if key in blocked_keys:
                        after = seq
                    else:
                        growing = False
                continue
            seen_keys.add(key)
            if not_before > now:  # the key's first entry waits for its retry
                if growing and len(blocked_keys) < _BLOCKED_KEYS:
                    blocked_keys.add(key)
                    after, until = seq, min(until, not_before)
                else:
                    growing = False
                continue
            if after_key is not None and after_key in seen_keys:
                # An earlier entry of its `after` key waits. While the prefix grows, every
                # key seen is one of its keys, so this one cannot go before `until` either.
                if growing and len(blocked_keys) < _BLOCKED_KEYS:
                    blocked_keys.add(key)
                    after = seq
                else:
                    growing = False
                continue
            growing = False
            if leases.get(seq, 0) <= now and (kind is None or row_kind == kind):
                chosen.append(seq)
                if len(chosen) == limit:
                    break
        cur.close()
        self._blocked = (after, blocked_keys, until) if blocked_keys else None
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

    def changed(self, seqs: Sequence[int]) -> None:
        """These entries are deleted or wait anew (writer thread)."""
        if self._blocked is not None and seqs and min(seqs) <= self._blocked[0]:
            self._blocked = None

    def drop(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._until.pop(seq, None)

    def clear(self) -> int:
        """Forget every lease (a new forwarder starts with none); how many there were."""
        held = len(self._until)
        self._until.clear()
        return held

    def in_flight(self, now: int) -> int:
        # The writer adds leases while the event loop's thread drops them (ack, release):
        # list() copies the values in one step under the GIL, a loop over them would not.
        return sum(1 for until in list(self._until.values()) if until > now)
