"""The journal: each event's journey (received, normalized or refused, held, released,
delivered, retried, dead, replayed, purged), kept for the live inspector.

Recording is on the ingest path, so it is cheap: with the inspector off (`on` False) a
source checks one attribute and does nothing else; when on, one request adds one tuple of
references (the body it read, the outcome of each event) to a list. The steps are made
from them (the body decoded, the events split out, masked when sent) only when somebody
reads them: a watcher, or a page that opens and asks for the buffer."""

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
# Shared steps (several collectors on one Redis): a collector with watchers says so this
# often, for this long; with COLLECTOR_INSPECT_BUFFER=0 the others record while it does.
WATCHED_EVERY_S = 1.0
WATCHED_TTL_MS = 5_000
# Steps kept on the shared stream when the buffer is 0 (only while someone watches): what
# the slowest reader may lag behind.
MIN_SHARED_STEPS = 10_000
# One read of the shared stream waits this long for new steps, and takes at most so many.
READ_BLOCK_MS = 1_000
READ_COUNT = 5_000

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

    def __call__(self, step: dict[str, Any]) -> bool:
        if self.journey and step["journey"] != self.journey:
            return False
        if self.contact:
            where = (step["key"] or "") + " " + (step["keyValue"] or "")
            if self.contact not in where:
                return False
        if self.order and step["order"] != self.order:
            return False
        if self.types and step["type"] not in self.types:
            return False
        if self.sources and step["source"] not in self.sources:
            return False
        return not (self.steps and step["step"] not in self.steps)


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


# A record: (t_ms, first step number, kind, payload...). Kinds:
#   INGEST: (t, n, INGEST, count, source, body, outs, status, split, prefix)
#   NOTE:   (t, n, NOTE, 1, step, journey, source, type, key, after, detail)
INGEST = 0
NOTE = 1


class Journal:
    """The steps of recent journeys: recorded cheaply, made into step dicts when read.

    The buffer keeps at most `buffer` steps and none older than `age_s` (checked when
    read). Watchers get new steps every FLUSH_S from `run`'s task."""

    def __init__(
        self, enabled: bool, buffer: int = 0, age_s: int = 900, shared: StepStream | None = None
    ) -> None:
        self.enabled = enabled
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
        self.on = False
        self._update()

    def _update(self) -> None:
        # Recording costs nothing more than this check when nobody can read the steps.
        self.on = self.enabled and (self.buffer > 0 or bool(self.watchers) or self._remote_watch)

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
        count = 2 * len(outs)
        first = self._n
        self._n = first + count
        kept = tuple(
            (o.message_id, o.event_type, o.key, o.after, o.kind, o.body)
            if type(o) is Normalized
            else o
            for o in outs
        )
        now = time.time_ns() // 1_000_000
        self._new.append((now, first, INGEST, count, source, body, kept, status, split, prefix))

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
        """One step of one journey, its detail made already (a few per delivery request)."""
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

    def flush(self) -> None:
        """Hand the steps recorded since the last flush to the watchers and the buffer."""
        now = time.time_ns() // 1_000_000
        if self._new:
            records, self._new = self._new, []
            if self.watchers:
                self._feed([step for record in records for step in self.expand(record)])
            if self.buffer:
                for record in records:
                    self._ring.append(record)
                    self._in_ring += record[3]
        self._trim(now)

    async def publish(self) -> None:
        """Shared steps: the ones recorded since the last time, to the shared stream in
        one round trip (every collector's watchers read them from there)."""
        assert self.shared is not None
        records, self._new = self._new, []
        if not records:
            return
        steps = [_encode(step) for record in records for step in self.expand(record)]
        max_steps = max(self.buffer, MIN_SHARED_STEPS if not self.buffer else 0)
        await self.shared.publish(steps, max_steps, time.time_ns() // 1_000_000 - self.age_ms)

    async def _say_watched(self) -> None:
        assert self.shared is not None
        if self.watchers:
            await self.shared.watch(WATCHED_TTL_MS)
        if not self.buffer:
            self._remote_watch = await self.shared.watched()
            self._update()

    async def run(self) -> None:
        """Flush every FLUSH_S until cancelled."""
        said = 0.0
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                if self.shared is None:
                    self.flush()
                    continue
                await self.publish()
                if time.monotonic() - said > WATCHED_EVERY_S:
                    said = time.monotonic()
                    await self._say_watched()
            except Exception:  # a bug or an outage here must not stop the inspector
                log.exception("the inspector could not hand steps over")


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
