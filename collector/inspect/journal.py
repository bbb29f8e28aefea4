"""The journal: each event's journey (received, normalized or refused, held, released,
delivered, retried, dead, replayed, purged), kept for the live inspector.

Recording is on the ingest path, so it is cheap: with the inspector off, or past the
share of a busy second (`on` False), a source checks one attribute and does nothing else;
when on, one request adds one tuple of references (the body it read, the outcome of each
event) to a list. The buffer keeps them packed into bytes. The steps are made from them
(the body decoded, the events split out, masked when sent) only when somebody reads them:
a watcher, or a page that opens and asks for the buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import FieldError
from ..normalize import Normalized
from .mask import mask_step

if TYPE_CHECKING:
    from ..spool import StepStream

log = logging.getLogger("collector.inspect")

STEPS = (
    "received", "normalized", "refused", "held", "released",
    "delivered", "retried", "dead", "replayed", "purged",
)  # fmt: skip
# The event as sent is shown up to this size: enough for any real event, and a 1 MB
# batch does not become a 1 MB step.
MAX_SENT_BYTES = 4096
# How often new steps go to the watchers: quick enough to look live (a tenth of a second),
# slow enough that a busy collector hands them over in a few large bunches.
FLUSH_S = 0.1
# Steps waiting for one watcher that reads slowly. Past it the watcher is dropped: its
# client reconnects with Last-Event-ID and gets what it missed from the buffer.
WATCHER_QUEUE = 20_000
# Shared steps (several collectors on one Redis): a collector with watchers says so, and
# what their filters name, this often, for this long. Meanwhile the others record (with
# COLLECTOR_INSPECT_BUFFER=0 too), at a watcher's share, and what the filters name past it.
WATCHED_EVERY_S = 1.0
WATCHED_TTL_MS = 5_000
# Steps kept on the shared stream when the buffer is 0 (only while someone watches): what
# the slowest reader may lag behind.
MIN_SHARED_STEPS = 10_000
# One read of the shared stream waits this long for new steps, and takes at most so many.
READ_BLOCK_MS = 1_000
READ_COUNT = 5_000
# Recording under load: at most this many steps a second, with bursts of a bucket's worth
# (twice as many), and past that, in each FLUSH_S, the requests that come first: with a
# watcher, what a page shows (the stream sends at most LIVE_STEPS_PER_S); without, the
# buffer's COLLECTOR_INSPECT_BUFFER steps a QUIET_SPAN_S, so that it spans at least that.
# When a window's share is used up, `on` turns False until the next: the sources then
# check one attribute, as with the inspector off, and a busy collector is inspected for
# next to nothing. The later steps of a journey recorded go in whatever the share, and so
# do the events a watcher's filter names, refused events and dead letters.
LIVE_STEPS_PER_S = 1000
QUIET_SPAN_S = 60
# Steps recorded whatever the share: the ones an operator looks for, rare when all is well.
ALWAYS = frozenset({"refused", "dead", "replayed", "purged"})
# Journeys recorded lately, whose later steps (delivered, retried, released) go in too;
# while the share leaves events out, only theirs (no journey shows a delivery alone).
RECENT_JOURNEYS = 50_000
LATER = frozenset({"delivered", "retried", "released"})
RECEIVED_NORMALIZED = ("received", "normalized")
RECEIVED_HELD = ("received", "held")

Split = Callable[[Any], list[Any]]


def one(data: Any) -> list[Any]:
    return [data]


def batch_or_one(data: Any) -> list[Any]:
    """`{"batch": [...]}` or one event (/v1/events, the browser, Segment)."""
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        return list(data["batch"])
    return [data]


def orders(data: Any) -> list[Any]:
    return list(data.get("orders") or []) if isinstance(data, dict) else []


# How a request's body holds its events, by number in a record (a function there would
# keep the record in the garbage collector's sight, see `Journal.ingest`).
BATCH, ONE, ORDERS = 0, 1, 2
SPLITS: tuple[Split, ...] = (batch_or_one, one, orders)


class Raw:
    """JSON bytes shown as they are (a Yespo body), decoded only to be masked. Not a
    dataclass: orjson would write one as an object of its fields."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def collector_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def sent(event: Any, small: bool = False) -> Any:
    """The event as sent, for `received`: as it is, or cut to MAX_SENT_BYTES as text.
    `small`: the whole body was within MAX_SENT_BYTES, so the event is."""
    if isinstance(event, dict) and "writeKey" in event:
        event = {k: v for k, v in event.items() if k != "writeKey"}  # never a key in a step
    if small:
        return event
    data = orjson.dumps(event)
    if len(data) <= MAX_SENT_BYTES:
        return event
    return data[:MAX_SENT_BYTES].decode(errors="ignore") + "…"


def step_number(step_id: str) -> int:
    """The increasing number in an in-process step id `<ms>-<n>`; -1 when unreadable."""
    try:
        return int(step_id.rpartition("-")[2])
    except ValueError:
        return -1


def _event_type(raw: Any) -> str | None:
    if isinstance(raw, dict):
        for name in ("type", "eventTypeKey", "event"):
            value = raw.get(name)
            if isinstance(value, str):
                return value
        if "externalOrderId" in raw:
            return "order"
    return None


def _key_parts(key: str | None, after: str | None) -> tuple[str | None, str | None]:
    """(keyValue, order) from a spool key: `contact:<keyValue>` or `order:<id>` (whose
    contact is `after`)."""
    if key is None:
        return None, None
    if key.startswith("order:"):
        contact = after[8:] if after and after.startswith("contact:") else None
        return contact, key[6:]
    if key.startswith("contact:"):
        return key[8:], None
    return None, None


@dataclass(slots=True)
class Filter:
    """What a watcher wants to see; empty: everything."""

    journey: str | None = None
    contact: str | None = None
    order: str | None = None
    types: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    steps: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return not (
            self.journey or self.contact or self.order or self.types or self.sources or self.steps
        )

    def as_json(self) -> dict[str, Any]:
        """What it names, for the other collectors on one Redis (see `from_json`)."""
        named = {
            "journey": self.journey, "contact": self.contact, "order": self.order,
            "types": sorted(self.types), "sources": sorted(self.sources),
            "steps": sorted(self.steps),
        }  # fmt: skip
        return {k: v for k, v in named.items() if v}

    @classmethod
    def from_json(cls, data: Any) -> Filter:
        """A filter from `as_json`; anything unreadable in it is left out."""
        if not isinstance(data, dict):
            return cls()

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) and value else None

        def names(name: str) -> frozenset[str]:
            value = data.get(name)
            if not isinstance(value, list):
                return frozenset()
            return frozenset(v for v in value if isinstance(v, str))

        return cls(
            text("journey"), text("contact"), text("order"),
            names("types"), names("sources"), names("steps"),
        )  # fmt: skip

    def heads(
        self,
        journey: str,
        source: str,
        event_type: str | None,
        key: str | None,
        after: str | None,
        steps: Sequence[str],
    ) -> bool:
        """Whether steps named `steps` of this event can pass, from what recording knows
        (a step's checks, before the step is made)."""
        key_value, order = _key_parts(key, after) if self.contact or self.order else (None, None)
        return self._passes(journey, source, event_type, key, key_value, order, steps)

    def __call__(self, step: dict[str, Any]) -> bool:
        return self._passes(
            step["journey"], step["source"], step["type"], step["key"], step["keyValue"],
            step["order"], (step["step"],),
        )  # fmt: skip

    def _passes(
        self,
        journey: str,
        source: str,
        event_type: str | None,
        key: str | None,
        key_value: str | None,
        order: str | None,
        steps: Sequence[str],
    ) -> bool:
        if self.journey and journey != self.journey:
            return False
        if self.contact and self.contact not in (key or "") + " " + (key_value or ""):
            return False
        if self.order and order != self.order:
            return False
        if self.types and event_type not in self.types:
            return False
        if self.sources and source not in self.sources:
            return False
        return not (self.steps and self.steps.isdisjoint(steps))


def _fragment(value: object) -> orjson.Fragment:
    if isinstance(value, Raw):
        return orjson.Fragment(value.data)
    raise TypeError(f"{type(value).__name__} is not JSON")


def render(step: dict[str, Any], mask: bool) -> bytes:
    """One step as the JSON a watcher gets: personal data masked unless `mask` is off."""
    if not mask:
        return orjson.dumps(step, default=_fragment)
    detail = step["detail"]
    if any(type(v) is Raw for v in detail.values()):
        detail = {k: orjson.loads(v.data) if type(v) is Raw else v for k, v in detail.items()}
    return orjson.dumps(mask_step({**step, "detail": detail}))


@dataclass(eq=False)
class Watcher:
    """One reader of the live stream: the steps for it wait in a queue, a flush's steps
    together, at most WATCHER_QUEUE steps in all."""

    keep: Filter
    queue: asyncio.Queue[list[dict[str, Any]]] = field(default_factory=asyncio.Queue)
    waiting: int = 0  # steps in the queue
    dropped: bool = False  # it fell WATCHER_QUEUE steps behind and gets no more
    seen: tuple[int, int] = (-1, -1)  # shared steps: the last id it had from the backlog
    skipped: int = 0  # steps not recorded (past the share) since it last heard of them


# A record: (t_ms, first step number, kind, payload...). Kinds:
#   INGEST: (t, n, INGEST, count, source, body, outs, status, split, prefix)
#   NOTE:   (t, n, NOTE, 1, step, journey, source, type, key, after, detail)
#   PACKED: (t, n, PACKED, count, bytes): records of one flush, as `_pack` writes them
INGEST = 0
NOTE = 1
PACKED = 2
# The buffer keeps a flush's records packed into bytes, this share of it at most in one
# (it drops them a pack at a time): held as they were recorded (a request's objects,
# scattered among the pieces of memory the next requests would reuse), 2,000 steps cost
# ingest about 2% more CPU per event; packed, about 1% (bench/inspector.py's `single`).
PACK_PARTS = 20


class Journal:
    """The steps of recent journeys: recorded cheaply, made into step dicts when read.

    The buffer keeps at most `buffer` steps and none older than `age_s` (checked when
    read). Watchers get new steps every FLUSH_S from `run`'s task."""

    def __init__(
        self,
        enabled: bool,
        buffer: int = 0,
        age_s: int = 900,
        shared: StepStream | None = None,
        offered: Callable[[], int] | None = None,
    ) -> None:
        self.enabled = enabled
        # How many events the sources have been sent so far (their counters): what the
        # share left out is told from it.
        self._offered = offered or (lambda: 0)
        # Several collectors' steps in one place (a Redis spool); None: this process's own.
        self.shared = shared
        self._remote_watch = False  # another collector on the shared stream has watchers
        self._reader: asyncio.Task[None] | None = None
        self._position = "0-0"  # the shared stream's id the reader is at
        self.buffer = buffer
        self.age_ms = age_s * 1000
        self.name = collector_name()
        self.watchers: set[Watcher] = set()
        self._new: list[tuple[Any, ...]] = []
        self._ring: deque[tuple[Any, ...]] = deque()
        self._in_ring = 0  # steps the ring's records make
        # The next step's number: step ids increase with it, also across a restart (it
        # starts at the start time in ms x 1000), so a client's Last-Event-ID from before
        # a restart does not hide the new process's steps.
        self._n = time.time_ns() // 1_000_000 * 1000
        # The share (see LIVE_STEPS_PER_S): steps this window may record and has, events
        # recorded at ingest, the bucket's steps left, the journeys recorded lately, and
        # the watchers' filters that name what they want.
        self._budget = float(buffer)
        self._recorded = 0
        self._ingested = 0
        self._saturated = False
        self._tokens = float(buffer)
        self._sampled_at = time.monotonic()
        self._offered_at = 0
        self._recent: dict[str, None] = {}
        self._targets: tuple[Filter, ...] = ()
        self._remote_targets: tuple[Filter, ...] = ()  # other collectors' watchers'
        self.skipped = 0  # steps left out since the last flush
        # `live`: someone can read the steps (the buffer, a watcher), so steps are worth
        # making (the forwarder's, an operator's replay); `on`: and this window's share is
        # not used up, so sources record what they take in. Recording costs nothing more
        # than checking `on` when it is False.
        self.live = False
        self.on = False
        self._update()

    def _update(self) -> None:
        self.live = self.enabled and (self.buffer > 0 or bool(self.watchers) or self._remote_watch)
        mine = tuple(w.keep for w in self.watchers if not w.keep.everything)
        self._targets = mine + self._remote_targets
        self.on = self.live and (self._recorded < self._budget or bool(self._targets))

    def resample(self, now: float | None = None) -> None:
        """A new window: its share from the bucket (LIVE_STEPS_PER_S with a watcher, the
        buffer a QUIET_SPAN_S without), and the steps the last one left out."""
        now = time.monotonic() if now is None else now
        dt = max(now - self._sampled_at, 1e-3)
        self._sampled_at = now
        if self.watchers or self._remote_watch:
            rate, cap = float(LIVE_STEPS_PER_S), 2.0 * LIVE_STEPS_PER_S
        else:
            rate, cap = self.buffer / QUIET_SPAN_S, float(self.buffer)
        self._saturated = self._recorded >= self._budget  # the last window left some out
        self._tokens = max(-cap, min(cap, self._tokens + dt * rate) - self._recorded)
        self._budget = max(self._tokens, rate * FLUSH_S, 2.0)
        offered = self._offered()
        events, self._offered_at = offered - self._offered_at, offered
        self.skipped += max(0, 2 * events - self._ingested)
        self._recorded = self._ingested = 0
        if len(self._recent) > RECENT_JOURNEYS:
            self._recent = dict.fromkeys(list(self._recent)[-RECENT_JOURNEYS // 2 :])
        self._update()

    # -- recording (the hot path) ---------------------------------------------------------

    def ingest(
        self,
        source: str,
        body: bytes,
        outs: Sequence[Normalized | Sequence[FieldError] | str],
        status: int,
        split: int = BATCH,
        prefix: str = "",
    ) -> None:
        """One request's events: the body as read and each event's outcome (`status`: what
        the sender heard for a refused one; `split`: how the body holds its events;
        `prefix` names where they sit in it, e.g. `orders`, for the refused ones' paths).

        An accepted event is kept as a tuple of its strings and bytes, not as its
        `Normalized`: the buffer holds no objects of the pipeline, and the record no
        function (`split` is a number), only data."""
        if self._recorded < self._budget:
            count = 2 * len(outs)
            kept: tuple[Any, ...] = tuple(
                (o.message_id, o.event_type, o.key, o.after, o.kind, o.body)
                if type(o) is Normalized
                else o
                for o in outs
            )
            self._recent.update((k[0], None) for k in kept if type(k) is tuple)
        else:
            kept, count = self._past_share(source, outs)
        self._recorded += count
        self._ingested += count
        if self._recorded >= self._budget and not self._targets:
            self.on = False  # till the next window
        if not count:
            return
        first = self._n
        self._n = first + count
        now = time.time_ns() // 1_000_000
        self._new.append((now, first, INGEST, count, source, body, kept, status, split, prefix))

    def _past_share(
        self, source: str, outs: Sequence[Normalized | Sequence[FieldError] | str]
    ) -> tuple[tuple[Any, ...], int]:
        """`ingest`'s events once the window's share is used up: the refused ones and those
        a watcher's filter names. (What it keeps of each, None for one left out; the steps
        they make.)"""
        kept: list[Any] = []
        count = 0
        for o in outs:
            if type(o) is Normalized:
                steps = RECEIVED_HELD if o.kind == "held" else RECEIVED_NORMALIZED
                if not any(
                    keep.heads(o.message_id, source, o.event_type, o.key, o.after, steps)
                    for keep in self._targets
                ):
                    kept.append(None)
                    continue
                kept.append((o.message_id, o.event_type, o.key, o.after, o.kind, o.body))
                self._recent[o.message_id] = None
            elif type(o) is str:  # an identify
                kept.append(None)
                continue
            else:  # refused: always (see ALWAYS)
                kept.append(o)
            count += 2
        return tuple(kept), count

    def note(
        self,
        step: str,
        journey: str,
        source: str,
        event_type: str | None,
        key: str | None,
        after: str | None,
        detail: dict[str, Any],
    ) -> None:
        """One step of one journey, its detail made already (a few per delivery request);
        past the window's share (a LATER step: while the share leaves events out) only if it
        is one ALWAYS kept, of a journey recorded lately, or one a watcher's filter names.
        Callers check `live` first."""
        if (
            (self._recorded >= self._budget or (self._saturated and step in LATER))
            and step not in ALWAYS
            and journey not in self._recent
            and not any(
                keep.heads(journey, source, event_type, key, after, (step,))
                for keep in self._targets
            )
        ):
            self.skipped += 1
            return
        self._recorded += 1
        if journey:
            self._recent[journey] = None
        t = time.time_ns() // 1_000_000
        n = self._n
        self._n = n + 1
        journey = journey or f"r-{n}"  # a call without a messageId is a journey of its own
        self._new.append((t, n, NOTE, 1, step, journey, source, event_type, key, after, detail))

    # -- reading --------------------------------------------------------------------------

    def _step(
        self,
        t: int,
        n: int,
        step: str,
        journey: str,
        source: str,
        event_type: str | None,
        key: str | None,
        after: str | None,
        detail: dict[str, Any],
    ) -> dict[str, Any]:
        key_value, order = _key_parts(key, after)
        return {
            "id": f"{t}-{n}",
            "t": t,
            "step": step,
            "journey": journey,
            "source": source,
            "type": event_type,
            "key": key,
            "keyValue": key_value,
            "order": order,
            "collector": self.name,
            "detail": detail,
        }

    def expand(self, record: tuple[Any, ...]) -> list[dict[str, Any]]:
        """A record's steps, oldest first."""
        t, n, kind = record[0], record[1], record[2]
        if kind == PACKED:
            return [step for each in _unpack(record[4]) for step in self.expand(each)]
        if kind == NOTE:
            return [self._step(t, n, *record[4:])]
        _, _, _, _, source, body, outs, status, split, prefix = record
        try:
            events = SPLITS[split](orjson.loads(body))
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            events = []
        steps = []
        small = len(body) <= MAX_SENT_BYTES
        for i, out in enumerate(outs):
            if out is None:  # past the window's share
                continue
            raw = events[i] if i < len(events) else None
            received: dict[str, Any] = {"body": sent(raw, small)}
            second: tuple[str, dict[str, Any]]
            event_type: str | None
            key: str | None
            after: str | None
            if type(out) is tuple:  # an accepted event's Normalized, as `ingest` keeps it
                journey, event_type, key, after, kind, yespo = out
                if kind == "held":  # a browser visitor's, until it identifies
                    second = ("held", {"visitor": key})
                else:
                    endpoint = "event" if kind == "event" else "orders"
                    second = ("normalized", {"yespo": Raw(yespo), "endpoint": endpoint})
            elif isinstance(out, str):  # an identify: not an event of its own
                given = raw.get("messageId") if isinstance(raw, dict) else None
                journey = given if isinstance(given, str) and given else f"r-{n}"
                steps.append(
                    self._step(t, n, "received", journey, source, out, None, None, received)
                )
                n += 2
                continue
            else:
                given = raw.get("messageId") if isinstance(raw, dict) else None
                journey = given if isinstance(given, str) and given else f"r-{n}"
                event_type, key, after = _event_type(raw), None, None
                where = f"{prefix}[{i}]" if prefix else ""
                errors = [
                    {"field": f"{where}.{e.field}" if where and e.field else where or e.field,
                     "message": e.message}
                    for e in out
                ]  # fmt: skip
                second = ("refused", {"errors": errors, "status": status})
            common = (journey, source, event_type, key, after)
            steps.append(self._step(t, n, "received", *common, received))
            steps.append(self._step(t, n + 1, second[0], *common, second[1]))
            n += 2
        return steps

    def _trim(self, now: int) -> None:
        ring = self._ring
        oldest = now - self.age_ms
        while ring and (self._in_ring > self.buffer or ring[0][0] < oldest):
            self._in_ring -= ring.popleft()[3]

    async def backlog(
        self, after: str | None, keep: Filter, watcher: Watcher
    ) -> list[dict[str, Any]]:
        """The buffered steps `keep` takes, oldest first, after the step id `after`."""
        if self.shared is not None:
            return await self._shared_backlog(after, keep, watcher)
        since = step_number(after) if after else -1
        oldest = time.time_ns() // 1_000_000 - self.age_ms
        steps = []
        for record in list(self._ring):
            if record[0] < oldest or record[1] + record[3] - 1 <= since:
                continue
            for step in self.expand(record):
                if step_number(step["id"]) > since and keep(step):
                    steps.append(step)
        return steps

    async def _shared_backlog(
        self, after: str | None, keep: Filter, watcher: Watcher
    ) -> list[dict[str, Any]]:
        assert self.shared is not None
        if self._reader is None:
            # Read on from the stream's end as it is now: what comes after the backlog
            # read below is the reader's, and the watcher skips what it had already.
            self._position = await self.shared.last_id()
            self._reader = asyncio.create_task(self._read_shared(), name="inspector-reader")
        oldest = time.time_ns() // 1_000_000 - self.age_ms
        count = self.buffer or MIN_SHARED_STEPS
        found = await self.shared.backlog(after if after and "-" in after else None, oldest, count)
        steps = []
        for step_id, data in found:
            step = _shared_step(step_id, data)
            watcher.seen = _stream_id(step_id)
            if keep(step):
                steps.append(step)
        if after and not found:
            watcher.seen = max(watcher.seen, _stream_id(after))
        return steps

    async def _read_shared(self) -> None:
        """While anyone here watches: the shared stream's new steps, to the watchers."""
        assert self.shared is not None
        try:
            while self.watchers:
                try:
                    found = await self.shared.read(self._position, READ_BLOCK_MS, READ_COUNT)
                except Exception:
                    log.exception("the inspector cannot read the shared steps; again in 1 s")
                    await asyncio.sleep(1)
                    continue
                if not found:
                    continue
                self._position = found[-1][0]
                steps = [(_stream_id(i), _shared_step(i, data)) for i, data in found]
                for watcher in list(self.watchers):
                    self._give(
                        watcher, [s for k, s in steps if k > watcher.seen and watcher.keep(s)]
                    )
        finally:
            self._reader = None

    # -- watchers -------------------------------------------------------------------------

    def watch(self, keep: Filter) -> Watcher:
        watcher = Watcher(keep)
        self.watchers.add(watcher)
        if len(self.watchers) == 1:
            self.resample()  # a new window with a watcher's share, from now
        else:
            self._update()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        self._update()

    def _feed(self, steps: list[dict[str, Any]]) -> None:
        for watcher in list(self.watchers):
            keep = watcher.keep
            self._give(watcher, steps if keep.everything else [s for s in steps if keep(s)])

    def _give(self, watcher: Watcher, steps: list[dict[str, Any]]) -> None:
        if not steps:
            return
        if watcher.waiting + len(steps) > WATCHER_QUEUE:
            watcher.dropped = True
            self.unwatch(watcher)
            watcher.queue.put_nowait([])  # wakes its stream, which ends
            return
        watcher.waiting += len(steps)
        watcher.queue.put_nowait(steps)

    def _tell_skipped(self) -> None:
        """The steps left out since the last flush, to the watchers that want everything
        (what a filter names is never left out)."""
        skipped, self.skipped = self.skipped, 0
        if not skipped:
            return
        for watcher in self.watchers:
            if watcher.keep.everything:
                watcher.skipped += skipped
                if watcher.queue.empty():
                    watcher.queue.put_nowait([])  # wakes its stream to say so

    def _keep(self, records: list[tuple[Any, ...]]) -> None:
        """Records to the buffer, packed (see PACK_PARTS)."""
        most = max(self.buffer // PACK_PARTS, 1)
        part: list[tuple[Any, ...]] = []
        count = 0
        for record in records:
            part.append(record)
            count += record[3]
            if count >= most or record is records[-1]:
                self._ring.append((part[0][0], part[0][1], PACKED, count, _pack(part)))
                self._in_ring += count
                part, count = [], 0

    def flush(self) -> None:
        """Hand the steps recorded since the last flush to the watchers and the buffer."""
        now = time.time_ns() // 1_000_000
        self._tell_skipped()
        if self._new:
            records, self._new = self._new, []
            if self.watchers:
                self._feed([step for record in records for step in self.expand(record)])
            if self.buffer:
                self._keep(records)
        self._trim(now)

    async def publish(self) -> None:
        """Shared steps: the ones recorded since the last time, to the shared stream in
        one round trip (every collector's watchers read them from there)."""
        assert self.shared is not None
        records, self._new = self._new, []
        self._tell_skipped()
        if not records:
            return
        steps = [_encode(step) for record in records for step in self.expand(record)]
        max_steps = max(self.buffer, MIN_SHARED_STEPS if not self.buffer else 0)
        await self.shared.publish(steps, max_steps, time.time_ns() // 1_000_000 - self.age_ms)

    async def _say_watched(self) -> None:
        assert self.shared is not None
        if self.watchers:
            filters = orjson.dumps([w.keep.as_json() for w in self.watchers])
            await self.shared.watch(WATCHED_TTL_MS, self.name, filters)
        # Whether another collector's page watches, and for what: then this one records
        # (with a buffer of 0), with a watcher's share, and what they name past it.
        found = await self.shared.watched(self.name)
        self._remote_watch = bool(found)
        named = []
        for payload in found:
            try:
                wanted = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            for data in wanted if isinstance(wanted, list) else []:
                keep = Filter.from_json(data)
                if not keep.everything:
                    named.append(keep)
        self._remote_targets = tuple(named)
        self._update()

    async def run(self) -> None:
        """Flush every FLUSH_S until cancelled."""
        said = 0.0
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self.resample()
                if self.shared is None:
                    self.flush()
                    continue
                await self.publish()
                if time.monotonic() - said > WATCHED_EVERY_S:
                    said = time.monotonic()
                    await self._say_watched()
            except Exception:  # a bug or an outage here must not stop the inspector
                log.exception("the inspector could not hand steps over")


def _pack(records: list[tuple[Any, ...]]) -> bytes:
    """Records as one JSON array: bytes as text, an accepted event as
    ["n", messageId, type, key, after, kind, its Yespo body], a refused one as
    ["r", [[field, message], ...]], an identify as ["i", type], one left out as null."""
    packed: list[Any] = []
    for record in records:
        if record[2] == INGEST:
            t, n, kind, count, source, body, outs, status, split, prefix = record
            kept = [
                ["n", *o[:5], o[5].decode()] if type(o) is tuple
                else ["i", o] if type(o) is str
                else None if o is None
                else ["r", [[e.field, e.message] for e in o]]
                for o in outs
            ]  # fmt: skip
            text = body.decode(errors="replace")
            packed.append([t, n, kind, count, source, text, kept, status, split, prefix])
        else:
            packed.append(list(record))
    return orjson.dumps(packed, default=_fragment)


def _unpack(data: bytes) -> list[tuple[Any, ...]]:
    """`_pack`'s records as they were recorded (a Yespo body in a note's detail decoded)."""
    records: list[tuple[Any, ...]] = []
    for record in orjson.loads(data):
        if record[2] == INGEST:
            t, n, kind, count, source, text, kept, status, split, prefix = record
            outs = tuple(
                None if o is None
                else (*o[1:6], o[6].encode()) if o[0] == "n"
                else o[1] if o[0] == "i"
                else [FieldError(f, m) for f, m in o[1]]
                for o in kept
            )  # fmt: skip
            records.append((t, n, kind, count, source, text.encode(), outs, status, split, prefix))
        else:
            records.append(tuple(record))
    return records


def _stream_id(step_id: str) -> tuple[int, int]:
    ms, _, seq = step_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (-1, -1)


def _encode(step: dict[str, Any]) -> bytes:
    """A step for the shared stream: unmasked (masking is each watcher's), without its id
    (the stream's entry id is)."""
    detail = {
        k: orjson.Fragment(v.data) if isinstance(v, Raw) else v for k, v in step["detail"].items()
    }
    return orjson.dumps({**step, "id": None, "detail": detail})


def _shared_step(step_id: str, data: bytes) -> dict[str, Any]:
    step: dict[str, Any] = orjson.loads(data)
    step["id"] = step_id
    return step


# The journal of a process without the inspector: `on` is always False.
OFF = Journal(False)


@contextlib.asynccontextmanager
async def running(journal: Journal) -> Any:
    """The journal's flush task, for as long as the app runs."""
    task = asyncio.create_task(journal.run(), name="inspector") if journal.enabled else None
    try:
        yield
    finally:
        for running_task in (task, journal._reader):
            if running_task is not None:
                running_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running_task
