"""In-memory spool: the reference behaviour for tests. Nothing survives a restart."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..errors import DeliveryClaimed, SpoolFull
from .base import DeadLetter, EntryLike, LocalVisitorLocks, Record, Rejected, Spool, SpoolStats


@dataclass(slots=True)
class _Row:
    record: Record
    not_before: int = 0
    lease_until: int = 0


class MemorySpool(LocalVisitorLocks, Spool):
    def __init__(self, *, max_events: int, dedup_window_ms: int) -> None:
        super().__init__()
        self.max_events = max_events
        self._window = dedup_window_ms
        self._rows: dict[int, _Row] = {}
        self._by_key: dict[str, deque[int]] = {}
        self._seen: dict[str, int] = {}
        self._dead: list[DeadLetter] = []
        self._seq = 0
        self._held: dict[str, dict[int, Record]] = {}  # visitor -> seq -> entry, oldest first
        self._held_count = 0
        self._visitors: dict[str, tuple[bytes, int]] = {}  # visitor -> (contact, identified at)
        self._delivering = False
        self._carts: dict[str, tuple[bytes, int]] = {}  # key -> (cart, saved at), oldest first
        self._rejected: list[Rejected] = []
        self._rejected_seq = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._delivering = False

    async def claim_delivery(self) -> None:
        # A second forwarder's `reset_leases` would hand out what the first has in flight.
        if self._delivering:
            raise DeliveryClaimed("memory://", f"a forwarder of this process, pid {os.getpid()}")
        self._delivering = True

    async def release_delivery(self) -> None:
        self._delivering = False

    async def append(
        self, entries: Sequence[EntryLike], received_at: int, bound: int | None = None
    ) -> list[bool]:
        self._check_bound(len(entries), bound)
        stored = self._claim(entries, received_at)
        for e, fresh in zip(entries, stored, strict=True):
            if fresh:
                self._enqueue(self._new_record(e, received_at))
        return stored

    def room(self, bound: int | None = None) -> int:
        limit = self.max_events if bound is None else min(bound, self.max_events)
        return max(0, limit - len(self._rows))

    def _check_bound(self, more: int, bound: int | None) -> None:
        if more > self.room(bound):
            limit = self.max_events if bound is None else min(bound, self.max_events)
            raise SpoolFull(f"spool holds {len(self._rows)} events, its bound is {limit}")

    def _claim(self, entries: Sequence[EntryLike], received_at: int) -> list[bool]:
        """Per entry, True unless its messageId was seen within the window (then claims it)."""
        cutoff = received_at - self._window
        stored: list[bool] = []
        for e in entries:
            if e.client_id:
                at = self._seen.get(e.message_id)
                if at is not None and at >= cutoff:
                    stored.append(False)
                    continue
                self._seen[e.message_id] = received_at
            stored.append(True)
        return stored

    def _new_record(self, e: EntryLike, received_at: int) -> Record:
        self._seq += 1
        return Record(
            self._seq,
            e.message_id,
            e.kind,
            e.key,
            e.event_type,
            received_at,
            e.event_time,
            e.body,
            after=e.after,
        )

    def _enqueue(self, rec: Record) -> None:
        self._rows[rec.seq] = _Row(rec)
        self._by_key.setdefault(rec.key, deque()).append(rec.seq)

    async def lease(
        self, limit: int, lease_ms: int, now: int, kind: str | None = None
    ) -> list[Record]:
        heads = []
        for seqs in self._by_key.values():
            row = self._rows[seqs[0]]
            if kind is not None and row.record.kind != kind:
                continue
            if row.lease_until > now or row.not_before > now:
                continue
            after = row.record.after
            # A key's seqs rise: its first one says whether one came before this entry.
            if (
                after is not None
                and (before := self._by_key.get(after))
                and before[0] < row.record.seq
            ):
                continue
            heads.append(row)
        heads.sort(key=lambda r: r.record.seq)
        out = []
        for row in heads[:limit]:
            row.lease_until = now + lease_ms
            out.append(row.record)
        return out

    async def reset_leases(self) -> int:
        leased = [r for r in self._rows.values() if r.lease_until]
        for row in leased:
            row.lease_until = 0
        return len(leased)

    def _remove(self, seq: int) -> _Row | None:
        row = self._rows.pop(seq, None)
        if row is not None:
            seqs = self._by_key[row.record.key]
            seqs.remove(seq)
            if not seqs:
                del self._by_key[row.record.key]
        return row

    async def ack(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._remove(seq)

    async def release(self, seqs: Sequence[int], not_before: int) -> None:
        for seq in seqs:
            row = self._rows.get(seq)
            if row is not None:
                row.record = replace(row.record, attempts=row.record.attempts + 1)
                row.not_before = not_before
                row.lease_until = 0

    async def dead_letter(
        self, seqs: Sequence[int], reason: str, status: int | None, detail: str, now: int
    ) -> None:
        for seq in seqs:
            row = self._remove(seq)
            if row is not None:
                self._dead.append(DeadLetter(row.record, reason, status, detail, now))

    async def pending(self, limit: int, after_seq: int = 0) -> list[Record]:
        return [r.record for s, r in self._rows.items() if s > after_seq][:limit]

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return self._dead[:limit]

    def _pick(self, seqs: Sequence[int] | None, reason: str | None) -> list[DeadLetter]:
        wanted = set(seqs) if seqs is not None else None
        return [
            d
            for d in self._dead
            if (wanted is None or d.record.seq in wanted) and (reason is None or d.reason == reason)
        ]

    async def replay(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        picked = self._pick(seqs, reason)
        now = int(time.time() * 1000)
        for d in picked:
            self._dead.remove(d)
            self._seq += 1
            self._enqueue(replace(d.record, seq=self._seq, received_at=now, attempts=0))
        return len(picked)

    async def purge(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        picked = self._pick(seqs, reason)
        for d in picked:
            self._dead.remove(d)
        return len(picked)

    async def dead_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self._dead:
            counts[d.reason] = counts.get(d.reason, 0) + 1
        return counts

    async def stats(self) -> SpoolStats:
        oldest = next(iter(self._rows.values())).record.received_at if self._rows else None
        now = int(time.time() * 1000)
        now_leased = sum(1 for r in self._rows.values() if r.lease_until > now)
        return SpoolStats(len(self._rows), now_leased, len(self._dead), oldest, self._held_count)

    async def check(self) -> None:
        return None

    # -- anonymous visitors ----------------------------------------------------------------

    async def hold(
        self, entries: Sequence[EntryLike], received_at: int, per_visitor: int
    ) -> tuple[list[bool], int]:
        stored = self._claim(entries, received_at)
        dropped = 0
        for e, fresh in zip(entries, stored, strict=True):
            if fresh:
                held = self._held.setdefault(e.key, {})
                rec = self._new_record(e, received_at)
                held[rec.seq] = rec
                self._held_count += 1
        for visitor in {e.key for e in entries}:
            held = self._held.get(visitor, {})
            while len(held) > per_visitor:
                del held[next(iter(held))]
                self._held_count -= 1
                dropped += 1
        while self._held_count > self.max_events:  # the oldest of any visitor go
            visitor = min(self._held, key=lambda v: next(iter(self._held[v])))
            held = self._held[visitor]
            del held[next(iter(held))]
            if not held:
                del self._held[visitor]
            self._held_count -= 1
            dropped += 1
        return stored, dropped

    async def held(self, visitor: str) -> list[Record]:
        return list(self._held.get(visitor, {}).values())

    async def identify(
        self,
        visitor: str,
        contact: bytes,
        now: int,
        release: Sequence[int] = (),
        entries: Sequence[EntryLike] = (),
        bound: int | None = None,
    ) -> None:
        self._check_bound(len(entries), bound)
        self._visitors[visitor] = (contact, now)
        wanted = set(release)
        for key in [v for v, held in self._held.items() if not wanted.isdisjoint(held)]:
            held = self._held[key]
            for seq in wanted.intersection(held):
                del held[seq]
                self._held_count -= 1
            if not held:
                del self._held[key]
        for e in entries:
            self._enqueue(self._new_record(e, now))

    async def contact_of(self, visitor: str, since: int) -> bytes | None:
        found = self._visitors.get(visitor)
        return found[0] if found is not None and found[1] >= since else None

    async def expire_held(self, held_before: int, visitors_before: int) -> int:
        expired = 0
        for visitor in list(self._held):
            held = self._held[visitor]
            for seq in [s for s, r in held.items() if r.received_at < held_before]:
                del held[seq]
                expired += 1
            if not held:
                del self._held[visitor]
        self._held_count -= expired
        for visitor in [v for v, (_, at) in self._visitors.items() if at < visitors_before]:
            del self._visitors[visitor]
        if len(self._visitors) > self.max_events:  # the newest max_events are remembered
            by_age = sorted(self._visitors, key=lambda v: self._visitors[v][1])
            for visitor in by_age[: len(self._visitors) - self.max_events]:
                del self._visitors[visitor]
        return expired

    # -- carts ---------------------------------------------------------------------------

    async def cart(self, key: str) -> bytes | None:
        found = self._carts.get(key)
        return None if found is None else found[0]

    async def save_carts(self, carts: Mapping[str, bytes | None], now: int) -> None:
        for key, cart in carts.items():
            self._carts.pop(key, None)  # re-inserted last: the dict stays oldest first
            if cart is not None:
                self._carts[key] = (cart, now)

    async def expire_carts(self, saved_before: int, max_carts: int) -> int:
        old = [k for k, (_, at) in self._carts.items() if at < saved_before]
        rest = [k for k, (_, at) in self._carts.items() if at >= saved_before]
        old += rest[: max(0, len(rest) - max_carts)]  # oldest first
        for key in old:
            del self._carts[key]
        return len(old)

    # -- rejected calls ------------------------------------------------------------------

    async def keep_rejected(self, calls: Sequence[Rejected], keep: int) -> None:
        for call in calls:
            self._rejected_seq += 1
            self._rejected.append(replace(call, seq=self._rejected_seq))
        del self._rejected[: max(0, len(self._rejected) - keep)]

    async def rejected(self, limit: int, reason: str | None = None) -> list[Rejected]:
        return [r for r in self._rejected if reason is None or r.reason == reason][:limit]

    async def purge_rejected(self, reason: str | None = None) -> int:
        kept = [r for r in self._rejected if reason is not None and r.reason != reason]
        purged = len(self._rejected) - len(kept)
        self._rejected = kept
        return purged

    async def rejected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        return counts
