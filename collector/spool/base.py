"""The spool: where accepted events wait until Yespo has them.

Guarantees every backend keeps (the contract suite in tests/spool/ checks them on each):

* `append` returns only after the events are committed: a crash after it returns loses
  nothing. It stores all of the given entries or none of them.
* An entry whose messageId came from the sender (``client_id``) is stored once per
  deduplication window; a repeat is reported as a duplicate and not stored again.
* The spool is bounded: past ``max_events`` waiting entries `append` raises `SpoolFull`
  instead of dropping anything.
* Entries come out of `lease` per ordering key in the order they were appended: a key's
  next entry is not handed out while an earlier one of the same key is leased, waiting
  for a retry, or pending. Other keys are not held back.
* An entry with an `after` key (an order event: its contact's key) is not handed out
  while an entry of that key appended before it is still waiting (pending, leased or
  waiting for a retry): an order never overtakes its contact's earlier events. Entries
  of that key appended after it, and every other key, are not held back.
* An entry leaves the spool only through `ack` (Yespo has it) or `dead_letter` (given up,
  kept with its reason until an operator replays or purges it).
* Anonymous visitors' events (`hold`) wait apart, per visitor, and are never leased. They
  leave only through `identify` (moved into the queue in the same transaction that
  records who the visitor is) or by expiring (`hold`'s per-visitor bound, `expire_held`),
  and the caller is told how many expired. Held entries share the dedup window.
* One request of a visitor at a time: `visitor_lock` excludes every other holder of the
  same visitor's lock, in every process that shares the store, and no other visitor.
* A remembered cart (`CartStore`) is kept until it is saved as None or expires; a saved
  cart is committed before `save_carts` returns.
* Calls that a source answered with success but could not make into Yespo events
  (`RejectedLog`) are kept with their reason, the newest `keep` of them, until purged.

Five concerns, five interfaces (`Queue`, `DeadLetters`, `VisitorStore`, `CartStore`,
`RejectedLog`); a backend is a `Spool`, all of them over one storage, so that `identify`
can move held entries into the queue in one transaction.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol


class EntryLike(Protocol):
    """What `append` and `hold` store: `collector.normalize.Normalized` has these
    attributes (a held entry's `kind` is "held" and its `key` its visitor). `after` is
    the ordering key whose earlier entries this one waits for, if any (held entries
    ignore it: they are normalized again when released)."""

    @property
    def message_id(self) -> str: ...
    @property
    def client_id(self) -> bool: ...
    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def event_time(self) -> int | None: ...
    @property
    def body(self) -> bytes: ...
    @property
    def after(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled entry as it comes back out."""

    seq: int
    message_id: str
    kind: str
    key: str
    event_type: str
    received_at: int  # epoch ms, when the collector accepted it
    event_time: int | None  # epoch ms, the sender's timestamp
    body: bytes
    attempts: int = 0
    after: str | None = None  # the key whose earlier entries it waits for


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str  # a short cause, e.g. "rejected", "expired"
    status: int | None  # Yespo's HTTP status, when there was one
    detail: str  # Yespo's body or the error text
    dead_at: int  # epoch ms


@dataclass(frozen=True, slots=True)
class SharedPause:
    """The 401 pause of every collector sharing a storage, as one of them asks for it."""

    reason: str | None  # why delivery is paused (the first refusal's text); None: it is not
    since: int  # epoch ms the pause began, as its collector's clock said (0: not paused)
    probing: bool  # the asker has the turn to probe (nobody else probes meanwhile)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int  # entries waiting, leased ones included
    in_flight: int  # entries under a lease
    dead: int  # dead letters
    oldest_received_at: int | None  # epoch ms of the oldest waiting entry
    held: int = 0  # anonymous visitors' entries waiting for `identify`


class Queue(abc.ABC):
    """The waiting queue: bounded, deduplicated, handed out per ordering key in order."""

    #: How many waiting entries the spool takes before `append` raises `SpoolFull`.
    max_events: int

    @abc.abstractmethod
    async def append(
        self, entries: Sequence[EntryLike], received_at: int, bound: int | None = None
    ) -> list[bool]:
        """Commit entries; return, per entry, True if stored or False if a duplicate.

        Raises `SpoolFull` (nothing stored) when the queue would pass its bound
        (`max_events`, or the lower `bound`: browsers get only a share), and `SpoolError`
        when the storage fails.
        """

    @abc.abstractmethod
    def room(self, bound: int | None = None) -> int:
        """How many more entries the queue takes now, by this process's counts (up to
        `max_events`, or the lower `bound`): to refuse a request before any of it is
        stored, where `append` or `identify` would refuse it halfway."""

    @abc.abstractmethod
    async def lease(
        self, limit: int, lease_ms: int, now: int, kind: str | None = None
    ) -> list[Record]:
        """Hand out up to `limit` entries that may be sent now, oldest first.

        Only the head of each key is eligible, and only when it is not leased, not
        waiting for a retry, and no entry of its `after` key appended before it is still
        waiting. A lease expires after `lease_ms`; an expired lease makes the
        entry eligible again (the sender of it crashed). With `kind`, only heads of that
        kind are handed out (orders, to fill a request to Add orders). While delivery is
        paused for every collector (`pause_delivery`), nothing is handed out but to the
        holder of the turn to probe.
        """

    @abc.abstractmethod
    async def claim_delivery(self) -> None:
        """Make the caller the one forwarder of the queue, until `release_delivery`,
        `close` or the end of the process; called before the forwarder starts.

        A backend whose leases belong to one forwarder (`reset_leases` clears them all:
        memory, SQLite) lets one forwarder at a time deliver, in every process that
        shares the storage: to another it raises `DeliveryClaimed`, naming the holder. A
        backend whose leases all forwarders share could let several deliver."""

    @abc.abstractmethod
    async def release_delivery(self) -> None:
        """Undo `claim_delivery` (nothing if not claimed); called after the forwarder stopped."""

    async def take_tokens(
        self, most: int, rate: float, burst: int, unused: int = 0
    ) -> tuple[int, int] | None:
        """YESPO_MAX_RPS for every collector that shares this storage together: give back
        `unused` tokens taken before, then take up to `most` of a bucket of `burst` that
        fills at `rate` per second. Returns how many were taken and, when none, the ms
        until one is due. None: the storage is one process's (SQLite, memory), whose
        forwarder keeps the ceiling itself."""
        return None

    async def pause_delivery(self, reason: str, since: int, turn_ms: int) -> SharedPause | None:
        """Yespo refused the key (401/403): pause delivery for every collector that shares
        this storage, with `reason` and `since` (epoch ms), unless a pause is on already
        (its reason and start stay), and give the caller the turn to probe for `turn_ms`
        if nobody has it. While the pause is on, `lease` hands out nothing but to the
        holder of the turn. Returns the pause. None: the storage is one process's (SQLite,
        memory), whose forwarder pauses and probes by itself."""
        return None

    async def delivery_pause(self, turn_ms: int = 0) -> SharedPause | None:
        """The pause of `pause_delivery`, as it is now (`reason` None: not paused). With
        `turn_ms`, while paused: take the turn to probe if nobody has it, or keep it if
        the caller has it, for `turn_ms` from now. None: the storage is one process's."""
        return None

    async def resume_delivery(self) -> None:
        """Yespo took an entry again: end the pause of `pause_delivery` (and the turn to
        probe); every collector that shares the storage resumes when it next asks.
        A storage that is one process's has no pause to end."""
        return None

    @abc.abstractmethod
    async def reset_leases(self) -> int:
        """Make every leased entry eligible again; return how many were leased.

        The forwarder calls this when it starts: leases left by a process that died are
        its own, so waiting for them to expire would only delay delivery."""

    @abc.abstractmethod
    async def ack(self, seqs: Sequence[int]) -> None:
        """Yespo has these entries: remove them."""

    @abc.abstractmethod
    async def release(self, seqs: Sequence[int], not_before: int) -> None:
        """Send these again, not before `not_before` (epoch ms); counts an attempt."""

    @abc.abstractmethod
    async def pending(self, limit: int, after_seq: int = 0) -> list[Record]:
        """Waiting entries in append order, without leasing them (operators, tests)."""

    @abc.abstractmethod
    async def stats(self) -> SpoolStats: ...

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise `SpoolError` if the spool cannot take a write right now (readiness)."""


class DeadLetters(abc.ABC):
    """Entries given up on, kept with their reason until an operator replays or purges them."""

    @abc.abstractmethod
    async def dead_letter(
        self, seqs: Sequence[int], reason: str, status: int | None, detail: str, now: int
    ) -> None:
        """Give up on these entries: keep them aside with the reason."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    @abc.abstractmethod
    async def replay(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        """Move dead letters back to the end of the waiting queue: all of them, or those
        with the given seqs and/or reason. Their clock and attempts start anew. Returns
        how many moved."""

    @abc.abstractmethod
    async def purge(self, seqs: Sequence[int] | None = None, reason: str | None = None) -> int:
        """Delete dead letters (all, or the selected ones) for good. Returns how many."""

    @abc.abstractmethod
    async def dead_counts(self) -> dict[str, int]:
        """Dead letters by reason."""


class VisitorStore(abc.ABC):
    """Anonymous visitors: their held entries, who they turned out to be, and a lock each.

    A visitor's requests are taken one at a time (`visitor_lock`), so an event being held
    cannot slip past the `identify` of another tab. The lock must reach as far as the
    store does: a store shared by several collectors locks across all of them."""

    @abc.abstractmethod
    def visitor_lock(self, visitor: str) -> AbstractAsyncContextManager[None]:
        """Held while one request of `visitor` is taken."""

    @abc.abstractmethod
    async def hold(
        self, entries: Sequence[EntryLike], received_at: int, per_visitor: int
    ) -> tuple[list[bool], int]:
        """Commit entries of anonymous visitors (each entry's `key` is its visitor) aside
        from the queue. Returns, per entry, True if stored or False if a duplicate, and how
        many of the oldest held entries were dropped: of these visitors, to keep each at
        most `per_visitor`, and of any visitor, to keep all at most `max_events` (held
        entries are never refused: the oldest unidentified ones make room)."""

    @abc.abstractmethod
    async def held(self, visitor: str) -> list[Record]:
        """The visitor's held entries, oldest first."""

    @abc.abstractmethod
    async def identify(
        self,
        visitor: str,
        contact: bytes,
        now: int,
        release: Sequence[int] = (),
        entries: Sequence[EntryLike] = (),
        bound: int | None = None,
    ) -> None:
        """In one transaction: remember that `visitor` is `contact`, delete the held
        entries `release` (of this visitor or of others the same person was known by),
        and append `entries` (what they became) to the queue. The
        entries are not checked for duplicates again (their holding was). Raises
        `SpoolFull` (nothing changes: they stay held) when they would take the queue past
        its bound, as `append` does."""

    @abc.abstractmethod
    async def contact_of(self, visitor: str, since: int) -> bytes | None:
        """The contact the visitor identified as at or after `since` (epoch ms), if any."""

    async def contacts_of(self, visitors: Sequence[str], since: int) -> dict[str, bytes]:
        """`contact_of` for many visitors at once (a Segment batch names many people): the
        ones remembered. A backend overrides it to read them in one round trip."""
        found = {}
        for visitor in dict.fromkeys(visitors):
            contact = await self.contact_of(visitor, since)
            if contact is not None:
                found[visitor] = contact
        return found

    @abc.abstractmethod
    async def expire_held(self, held_before: int, visitors_before: int) -> int:
        """Delete held entries received before `held_before` and forget visitors identified
        before `visitors_before`, and the oldest beyond `max_events` remembered visitors;
        return how many held entries were deleted."""


class CartStore(abc.ABC):
    """Carts remembered per shopper, for senders that tell one product at a time (Segment's
    Product Added) where Yespo wants the whole cart. A cart is the caller's bytes; the store
    only keeps them. Callers take one cart's changes one at a time (`visitor_lock` on the
    cart's key), so the store needs no compare-and-set: a key-value store with expiry
    (Redis's GET, SET and DEL) is enough."""

    @abc.abstractmethod
    async def cart(self, key: str) -> bytes | None:
        """The cart saved under `key`, if any."""

    @abc.abstractmethod
    async def save_carts(self, carts: Mapping[str, bytes | None], now: int) -> None:
        """Save each cart (None: forget it), all in one commit, stamped `now` (epoch ms)."""

    @abc.abstractmethod
    async def expire_carts(self, saved_before: int, max_carts: int) -> int:
        """Forget carts last saved before `saved_before`, and the oldest beyond
        `max_carts`; return how many were forgotten."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A call a source took (its protocol answers it with success) and could not make into a
    Yespo event: kept so that an operator can see what was sent and why it went no further."""

    source: str  # the way in, e.g. "segment"
    reason: str  # a short code, e.g. "no_product_id" (also the metric's label)
    detail: str  # what exactly is wrong, for a person
    message_id: str | None  # the sender's id of the call, when it gave one
    body: bytes  # the call as received (JSON)
    at: int  # epoch ms, when it was received
    seq: int = 0  # set by the log


class RejectedLog(abc.ABC):
    """Rejected calls, newest kept: the sender was told success (Segment's SDKs would
    otherwise retry or drop the good calls of a batch beside it), so this is where a
    wrong call shows up."""

    @abc.abstractmethod
    async def keep_rejected(self, calls: Sequence[Rejected], keep: int) -> None:
        """Commit `calls`; then keep at most the newest `keep` of all rejected calls."""

    @abc.abstractmethod
    async def rejected(self, limit: int, reason: str | None = None) -> list[Rejected]:
        """Rejected calls (of `reason`, if given), oldest first, at most `limit`."""

    @abc.abstractmethod
    async def purge_rejected(self, reason: str | None = None) -> int:
        """Delete rejected calls (all, or those of `reason`); return how many."""

    @abc.abstractmethod
    async def rejected_counts(self) -> dict[str, int]:
        """Rejected calls kept, by reason."""


class Spool(Queue, DeadLetters, VisitorStore, CartStore, RejectedLog):
    """Interface of every spool backend: the five concerns in one storage."""

    #: What a committed write survives, when the backend can only tell once open (Redis:
    #: the server's persistence setting); shown in /readyz's detail. None: as documented.
    durability: str | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Create or open the storage. Called once before anything else."""

    def step_stream(self) -> StepStream | None:
        """Where the live inspector's steps meet when several collectors share this spool;
        None (the default): each collector keeps its own in its process."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending commits and release the storage."""


class LocalVisitorLocks:
    """`VisitorStore.visitor_lock` for a store only this process uses: an asyncio lock per
    visitor, dropped when nobody waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def visitor_lock(self, visitor: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(visitor) or (asyncio.Lock(), 0)
        self._locks[visitor] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[visitor]
            if users == 1:
                del self._locks[visitor]
            else:
                self._locks[visitor] = (lock, users - 1)


class StepStream(abc.ABC):
    """The live inspector's steps where several collectors share them (a Redis spool):
    each collector publishes its steps, and reads everyone's. Entries are (id, step JSON);
    ids increase along the stream. A backend without one (`Spool.step_stream` None) keeps
    the steps in the process."""

    @abc.abstractmethod
    async def publish(self, steps: Sequence[bytes], max_steps: int, since_ms: int) -> None:
        """Add `steps`; keep about the newest `max_steps`, none from before `since_ms`."""

    @abc.abstractmethod
    async def backlog(
        self, after: str | None, since_ms: int, count: int
    ) -> list[tuple[str, bytes]]:
        """The newest `count` steps after the id `after` (None: since `since_ms`), oldest first."""

    @abc.abstractmethod
    async def last_id(self) -> str:
        """The newest step's id ("0-0" when there is none)."""

    @abc.abstractmethod
    async def read(self, after: str, block_ms: int, count: int) -> list[tuple[str, bytes]]:
        """Up to `count` steps after `after`, waiting up to `block_ms` for the first."""

    @abc.abstractmethod
    async def watch(self, ttl_ms: int, name: str, filters: bytes) -> None:
        """Say for `ttl_ms` that collector `name` has watchers, wanting `filters` (JSON):
        the others record meanwhile, and keep what those name past their share."""

    @abc.abstractmethod
    async def watched(self, name: str) -> list[bytes]:
        """The filters of the other collectors that said they have watchers, within their
        `ttl_ms` (none: nobody else watches)."""
