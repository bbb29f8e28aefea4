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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import FieldError
from ..normalize import Normalized
from .mask import mask_json, mask_key, mask_text

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


@dataclass(slots=True)
class Raw:
    """JSON bytes shown as they are (a Yespo body), decoded only to be masked."""

    data: bytes


def collector_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def sent(event: Any) -> Any:
    """The event as sent, for `received`: as it is, or cut to MAX_SENT_BYTES as text."""
    if isinstance(event, dict):
        event = {k: v for k, v in event.items() if k != "writeKey"}  # never a key in a step
    data = orjson.dumps(event)
    if len(data) <= MAX_SENT_BYTES:
        return event
    return data[:MAX_SENT_BYTES].decode(errors="ignore") + "…"


def step_time(step_id: str) -> int:
    """The epoch ms in an in-process step id `<ms>-<n>`; -1 when unreadable."""
    try:
        return int(step_id.partition("-")[0])
    except ValueError:
        return -1


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


def render(step: dict[str, Any], mask: bool) -> bytes:
    """One step as the JSON a watcher gets: personal data masked unless `mask` is off."""
    detail = step["detail"]
    if not mask:
        shown = {k: orjson.Fragment(v.data) if isinstance(v, Raw) else v for k, v in detail.items()}
        return orjson.dumps({**step, "detail": shown})
    plain = {k: orjson.loads(v.data) if isinstance(v, Raw) else v for k, v in detail.items()}
    masked = {
        **step,
        "key": mask_key(step["key"]),
        "keyValue": None if step["keyValue"] is None else mask_text(step["keyValue"], True),
        "detail": mask_json(plain),
    }
    return orjson.dumps(masked)


@dataclass(eq=False)
class Watcher:
    """One reader of the live stream: the steps for it wait in a bounded queue."""

    keep: Filter
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(WATCHER_QUEUE)
    )
    dropped: bool = False  # it fell WATCHER_QUEUE steps behind and gets no more


# A record: (t_ms, first step number, kind, payload...). Kinds:
#   INGEST: (t, n, INGEST, count, source, body, outs, status, split, prefix)
#   NOTE:   (t, n, NOTE, 1, step, journey, source, type, key, after, detail)
INGEST = 0
NOTE = 1


class Journal:
    """The steps of recent journeys: recorded cheaply, made into step dicts when read.

    The buffer keeps at most `buffer` steps and none older than `age_s` (checked when
    read). Watchers get new steps every FLUSH_S from `run`'s task."""

    def __init__(self, enabled: bool, buffer: int = 0, age_s: int = 900) -> None:
        self.enabled = enabled
        self.buffer = buffer
        self.age_ms = age_s * 1000
        self.name = collector_name()
        self.watchers: set[Watcher] = set()
        self._new: list[tuple[Any, ...]] = []
        self._ring: deque[tuple[Any, ...]] = deque()
        self._in_ring = 0  # steps the ring's records make
        self._n = 0  # the next step's number: step ids increase with it
        # Numbers count from 0 in each process: an id from before this one started (a
        # client reconnecting across a restart) says nothing about this count.
        self.started_ms = time.time_ns() // 1_000_000
        self.on = False
        self._update()

    def _update(self) -> None:
        # Recording costs nothing more than this check when nobody can read the steps.
        self.on = self.enabled and (self.buffer > 0 or bool(self.watchers))

    # -- recording (the hot path) ---------------------------------------------------------

    def ingest(
        self,
        source: str,
        body: bytes,
        outs: Sequence[Normalized | Sequence[FieldError] | str],
        status: int,
        split: Split = batch_or_one,
        prefix: str = "",
    ) -> None:
        """One request's events: the body as read and each event's outcome (`status`: what
        the sender heard for a refused one; `prefix` names where the events sit in it,
        e.g. `orders`, for the refused ones' field paths)."""
        count = 2 * len(outs)
        first = self._n
        self._n = first + count
        record = (time.time_ns() // 1_000_000, first, INGEST, count, source, body, outs)
        self._new.append((*record, status, split, prefix))

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
            events = split(orjson.loads(body))
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            events = []
        steps = []
        for i, out in enumerate(outs):
            raw = events[i] if i < len(events) else None
            received: dict[str, Any] = {"body": sent(raw)}
            second: tuple[str, dict[str, Any]]
            event_type: str | None
            key: str | None
            after: str | None
            if type(out) is Normalized:
                journey, event_type, key, after = out.message_id, out.event_type, out.key, out.after
                if out.kind == "held":  # a browser visitor's, until it identifies
                    second = ("held", {"visitor": key})
                else:
                    endpoint = "event" if out.kind == "event" else "orders"
                    second = ("normalized", {"yespo": Raw(out.body), "endpoint": endpoint})
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

    def backlog(self, after: str | None, keep: Filter) -> Iterator[dict[str, Any]]:
        """The buffered steps `keep` takes, oldest first, after the step id `after`."""
        since = step_number(after) if after and step_time(after) >= self.started_ms else -1
        oldest = time.time_ns() // 1_000_000 - self.age_ms
        for record in list(self._ring):
            if record[0] < oldest or record[1] + record[3] - 1 <= since:
                continue
            for step in self.expand(record):
                if step_number(step["id"]) > since and keep(step):
                    yield step

    # -- watchers -------------------------------------------------------------------------

    def watch(self, keep: Filter) -> Watcher:
        watcher = Watcher(keep)
        self.watchers.add(watcher)
        self._update()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        self._update()

    def _feed(self, steps: Iterable[dict[str, Any]]) -> None:
        for step in steps:
            for watcher in list(self.watchers):
                if not watcher.keep(step):
                    continue
                try:
                    watcher.queue.put_nowait(step)
                except asyncio.QueueFull:
                    watcher.dropped = True
                    self.unwatch(watcher)

    def flush(self) -> None:
        """Hand the steps recorded since the last flush to the watchers and the buffer."""
        now = time.time_ns() // 1_000_000
        if self._new:
            records, self._new = self._new, []
            if self.watchers:
                for record in records:
                    self._feed(self.expand(record))
            if self.buffer:
                for record in records:
                    self._ring.append(record)
                    self._in_ring += record[3]
        self._trim(now)

    async def run(self) -> None:
        """Flush every FLUSH_S until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self.flush()
            except Exception:  # a bug here must not stop the inspector for good
                log.exception("the inspector could not hand steps over")


# The journal of a process without the inspector: `on` is always False.
OFF = Journal(False)


@contextlib.asynccontextmanager
async def running(journal: Journal) -> Any:
    """The journal's flush task, for as long as the app runs."""
    task = asyncio.create_task(journal.run(), name="inspector") if journal.enabled else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
