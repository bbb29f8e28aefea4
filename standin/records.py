"""What the Yespo stand-in accepted or ignored: bounded logs of records, readable incrementally."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, NamedTuple

import orjson

# A record as stored: (seq, at, path, raw, reason). A plain tuple of atoms, which the
# garbage collector stops tracking, so a million of them do not lengthen every full
# collection (a NamedTuple subclass would stay tracked).
Row = tuple[int, int, str, bytes, str]


class Recorded(NamedTuple):
    """One accepted event, one accepted order of an Add-orders request, or one ignored event."""

    seq: int
    at: int  # epoch milliseconds
    path: str
    raw: bytes  # the JSON as received (events) or as re-encoded (orders)
    reason: str = ""  # why Yespo ignores it: set on ignored events only

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "body": orjson.Fragment(self.raw),
            "at": self.at,
            "seq": self.seq,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


class RecordLog:
    """Bounded, append-only records with a sequence number that survives clear()."""

    def __init__(self, max_records: int) -> None:
        self.rows: deque[Row] = deque()
        self.max_records = max_records
        self.last_seq = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, path: str, raw: bytes, reason: str = "") -> tuple[Row, Row | None]:
        """Append; return the new row and the one evicted to stay in bounds, if any."""
        self.last_seq += 1
        row = (self.last_seq, time.time_ns() // 1_000_000, path, raw, reason)
        evicted = self.rows.popleft() if len(self.rows) >= self.max_records else None
        self.rows.append(row)
        if self._waiters:
            held = len(self.rows)
            for count, waiter in self._waiters:
                if held >= count and not waiter.done():
                    waiter.set_result(None)
        return row, evicted

    def all(self) -> list[Recorded]:
        return [Recorded(*row) for row in self.rows]

    def since(self, seq: int, limit: int | None = None) -> list[Recorded]:
        """Records after `seq`, oldest first; reads from the new end, so polling is cheap."""
        out: list[Recorded] = []
        for row in reversed(self.rows):
            if row[0] <= seq:
                break
            out.append(Recorded(*row))
        out.reverse()
        return out if limit is None else out[:limit]

    def clear(self) -> None:
        self.rows.clear()

    async def wait(self, count: int, within_s: float) -> list[Recorded]:
        """All records, once at least `count` are held; TimeoutError after `within_s`."""
        if len(self.rows) < count:
            waiter = asyncio.get_running_loop().create_future()
            entry = (count, waiter)
            self._waiters.append(entry)
            try:
                async with asyncio.timeout(within_s):
                    await waiter
            except TimeoutError:
                raise TimeoutError(
                    f"{len(self.rows)} of {count} records after {within_s} s"
                ) from None
            finally:
                self._waiters.remove(entry)
        return self.all()
