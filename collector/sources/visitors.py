"""Anonymous visitors: their events wait in the spool until the visitor identifies.

Shared by the sources that take events of people not yet known (`Holding`, `Writes`): the
browser endpoint (`Visitors`, below) and Segment's. Both hold in the spool's one
`VisitorStore`, each under keys of its own.

Yespo drops events that name no contact, but most visitors identify only at login or
checkout. An event of a visitor nobody has identified is checked like any other (with a
stand-in contact) and held in the spool under its visitor id. An ``identify`` event names
the contact: the visitor's held events become Yespo events with that contact, in their
original order, in the same transaction that records who the visitor is; later events of
the visitor get the contact attached here. Held events that outlive `anonymous_max_age_s`,
or pass `anonymous_max_events` per visitor, are dropped and counted in the metrics.

A visitor's requests are taken one at a time (the spool's lock per visitor), so an event
being held cannot slip past the `identify` of another tab.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..config import Settings
from ..errors import FieldError, SpoolError, SpoolFull
from ..inspect import OFF, Journal
from ..inspect.journal import Raw
from ..metrics import Metrics
from ..normalize import Normalized, normalize_event
from ..normalize.contact import identity_problem, key_value, normalize_contact
from ..spool import Spool
from .base import Counters, id_factory, rules_from

log = logging.getLogger("collector.visitors")

# How often held events and remembered visitors are aged out.
SWEEP_EVERY_S = 60.0
# An anonymous event is checked with this contact in place of the one it will get.
_STAND_IN_CONTACT = {"email": "anonymous@collector.invalid"}
IDENTIFY = "identify"


# Browsers may fill the spool's queue to this share of its bound; the rest stays free for
# the server endpoints, whose keys are secret. A site key is public, so anyone can send
# events under it: they must not be able to shut a shop's own orders out with 503s.
BROWSER_SHARE = 0.8


def visitor_key(anonymous_id: str) -> str:
    return f"visitor:{anonymous_id}"


class Writes:
    """One request's entries, in the order they were decided: events held for people not
    yet known, and events for the queue. `flush` commits both; a request flushes before
    anything that must see what it decided so far (an identify releases what was held)."""

    def __init__(self, holding: Holding, now: int) -> None:
        self._holding = holding
        self.now = now
        self.to_hold: list[Normalized] = []
        self.to_append: list[Normalized] = []
        self.held = 0  # entries held, duplicates aside
        self.duplicates = 0

    async def flush(self) -> None:
        h = self._holding
        if h.journal.on and h.note_writes:
            h.note_writes_of(self)
        if self.to_hold:
            stored, dropped = await h.spool.hold(self.to_hold, self.now, h.per_visitor)
            self.held += sum(stored)
            self.duplicates += len(stored) - sum(stored)
            if dropped:
                h.metrics.anonymous_expired.labels("count").inc(dropped)
            self.to_hold.clear()
        if self.to_append:
            stored = await h.spool.append(self.to_append, self.now, h.bound)
            self.duplicates += len(stored) - sum(stored)
            h.appended()
            self.to_append.clear()


class Holding:
    """What the sources that take events of people not yet known share, bound to one spool:
    checking an event to hold, the contact an identify names, and releasing what was held
    when it comes. The browser endpoint holds per visitor (`visitor_key`), Segment per
    anonymousId and userId; both in the spool's one `VisitorStore`.

    `bound`: how far these sources may fill the queue (None: all of it)."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        on_append: Callable[[], None] | None = None,
        bound: int | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.rules = rules_from(settings)
        self.new_id = id_factory()
        self.bound = bound
        self.per_visitor = settings.anonymous_max_events
        self._on_append = on_append
        self.journal: Journal = OFF  # the source's, set by it
        self.source = "browser"
        # Segment's steps are recorded as its writes go (the browser's, per request).
        self.note_writes = False

    def appended(self) -> None:
        if self._on_append is not None:
            self._on_append()

    def writes(self, now: int) -> Writes:
        return Writes(self, now)

    async def contact_of(self, key: str, now: int) -> dict[str, Any] | None:
        """The contact `key` was identified as, within COLLECTOR_VISITOR_TTL."""
        found = await self.spool.contact_of(key, now - self.settings.visitor_ttl_s * 1000)
        return None if found is None else orjson.loads(found)

    def held_entry(
        self, event: Any, key: str, client_id: bool, keep_contact: bool = False
    ) -> Normalized | list[FieldError]:
        """Check an event of someone not yet known as if it named a contact; what the spool
        holds of it under `key`.

        `client_id`: the messageId is the sender's own, not one made here: only such ids
        are claimed for deduplication (a made-up one cannot come again). `keep_contact`:
        the event is checked and held with the contact it names, which it keeps when the
        person identifies."""
        if not isinstance(event, dict):
            out = normalize_event(event, self.rules, self.new_id)
            assert not isinstance(out, Normalized)
            return out
        checked = event if keep_contact else {**event, "contact": _STAND_IN_CONTACT}
        out = normalize_event(checked, self.rules, self.new_id)
        if not isinstance(out, Normalized):
            return out
        if not keep_contact:
            event.pop("contact", None)
        event.pop("context", None)  # checked, never sent: not kept (nor re-serialized)
        body = orjson.dumps(event)
        return Normalized(
            out.message_id, client_id, "held", key, out.event_type, out.event_time, body
        )

    def identity(
        self, given: object, errors: list[FieldError], path: str = "contact"
    ) -> dict[str, Any] | None:
        """The contact `given` names, if Yespo can find a contact by it."""
        if not isinstance(given, dict) or not given:
            errors.append(FieldError(path, "identify needs a contact: email, phone, ..."))
            return None
        contact = normalize_contact(given, errors, phone_region=self.rules.phone_region)
        if errors:
            return None
        problem = identity_problem(contact, False, self.rules.identifying)
        if problem is None and key_value(contact, self.rules.key_value_order) is None:
            problem = f"has none of the keyValue fields ({', '.join(self.rules.key_value_order)})"
        if problem is not None:
            errors.append(FieldError(path, problem))
            return None
        return {k: v for k, v in given.items() if v is not None}

    def after_visitor(self, out: Normalized, contact: dict[str, Any]) -> Normalized:
        """An order event of a known visitor waits for the visitor's earlier events, also
        when it names a contact of its own (an order may name only its customer id, while
        the visitor's events go by the contact it identified as)."""
        if out.after is None:
            return out
        kv = key_value(normalize_contact(contact, []), self.rules.key_value_order)
        if kv is None:  # remembered under other keyValue settings
            return out
        after = f"contact:{kv}"  # the key normalization gives the visitor's events
        return out if after == out.after else dataclasses.replace(out, after=after)

    async def release(
        self, keys: Sequence[str], contact: dict[str, Any], now: int, known: bool = False
    ) -> None:
        """Remember that `keys[0]` is `contact`, and deliver what was held under any of
        `keys` (one person's names), in the order it came, with the contact.

        `known`: `keys[0]` is already remembered as this contact. Pages of logged-in
        visitors identify on every load; with nothing held there is nothing to write then
        (the visitor stays remembered from the first identify, `COLLECTOR_VISITOR_TTL`)."""
        held = sorted([r for key in keys for r in await self.spool.held(key)], key=lambda r: r.seq)
        self.metrics.identified.inc()
        if known and not held:
            return
        entries: list[Normalized] = []
        invalid = 0
        for record in held:
            event = orjson.loads(record.body)
            if not event.get("contact"):  # one held with a contact of its own keeps it
                event["contact"] = contact
            out = normalize_event(event, self.rules, self.new_id)
            if isinstance(out, Normalized):
                entries.append(self.after_visitor(out, contact))
            else:
                invalid += 1
                log.warning(
                    "held event %s is not valid with the contact given and is dropped: %s",
                    record.message_id,
                    "; ".join(f"{e.field}: {e.message}" for e in out),
                )
        seqs = [r.seq for r in held]
        await self.spool.identify(keys[0], orjson.dumps(contact), now, seqs, entries, self.bound)
        if entries:
            self.metrics.anonymous_released.inc(len(entries))
            self.appended()
            if self.journal.live:  # a journey recorded when held goes on
                self._note_released(keys[0], contact, entries)
        if invalid:
            self.metrics.anonymous_expired.labels("invalid").inc(invalid)

    def note_writes_of(self, writes: Writes) -> None:
        for out in writes.to_hold:
            held = (out.message_id, self.source, out.event_type, None, None)
            self.journal.note("held", *held, {"visitor": out.key})
        for out in writes.to_append:
            common = (out.message_id, self.source, out.event_type, out.key, out.after)
            endpoint = "event" if out.kind == "event" else "orders"
            self.journal.note("normalized", *common, {"yespo": Raw(out.body), "endpoint": endpoint})

    def _note_released(self, key: str, contact: dict[str, Any], entries: list[Normalized]) -> None:
        for out in entries:
            common = (out.message_id, self.source, out.event_type, out.key, out.after)
            self.journal.note("released", *common, {"visitor": key, "contact": contact})
            endpoint = "event" if out.kind == "event" else "orders"
            self.journal.note("normalized", *common, {"yespo": Raw(out.body), "endpoint": endpoint})


class Visitors:
    """Takes one visitor's batch of browser events: hold, deliver or identify each."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        counters: Counters,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.counters = counters
        self.holding = Holding(
            settings, spool, metrics, on_append, int(spool.max_events * BROWSER_SHARE)
        )

    async def take(
        self, batch: list[Any], anonymous_id: str, outs: list[Any] | None = None
    ) -> dict[str, Any]:
        """The reply body for one request of the visitor, its events taken in order.
        `outs`, for the inspector: gets what became of each event (see `_take`)."""
        async with self.spool.visitor_lock(anonymous_id):
            return await self._take(batch, anonymous_id, outs)

    async def _take(
        self, batch: list[Any], anonymous_id: str, outs: list[Any] | None
    ) -> dict[str, Any]:
        """Hold, deliver or identify each event in order; the reply body. `outs` (None:
        not asked) gets each event's outcome: its entry (appended or held), its errors, or
        "identify"."""
        h = self.holding
        now = int(time.time() * 1000)
        key = visitor_key(anonymous_id)
        contact = await h.contact_of(key, now)
        await self._check_room(batch, key, contact)
        writes = h.writes(now)
        accepted = 0
        rejected: list[dict[str, Any]] = []

        for index, raw in enumerate(batch):
            errors: list[FieldError] = []
            if isinstance(raw, dict) and raw.get("anonymousId", anonymous_id) != anonymous_id:
                errors.append(FieldError("anonymousId", "differs from the request's visitor"))
            elif isinstance(raw, dict) and raw.get("type") == IDENTIFY:
                identity = h.identity(raw.get("contact"), errors)
                if identity is not None:
                    await writes.flush()
                    await h.release([key], identity, now, known=identity == contact)
                    contact = identity
                    accepted += 1
                    if outs is not None:
                        outs.append("identify")
                    continue
            else:
                event = self._with_defaults(raw, now)
                own_contact = isinstance(raw, dict) and bool(raw.get("contact"))
                keep_contact = False
                if contact is None and own_contact:
                    # An event that names a contact identifies the visitor, as identify
                    # does: what was held goes first, so the visitor's events keep their
                    # order (an order's later event must not overtake its held creation).
                    identity = h.identity(raw.get("contact"), [])
                    if identity is not None:
                        await writes.flush()
                        await h.release([key], identity, now)
                        contact = identity
                    elif writes.to_hold or await self.spool.held(key):
                        # A contact that cannot identify the visitor (an order's
                        # externalCustomerId alone), while earlier events of the visitor
                        # wait: it waits behind them, keeping its own contact.
                        own_contact, keep_contact = False, True
                if contact is not None or own_contact:
                    if type(event) is dict and contact is not None and not event.get("contact"):
                        event["contact"] = contact
                    out = normalize_event(event, h.rules, h.new_id)
                    if isinstance(out, Normalized):
                        if contact is not None:
                            out = h.after_visitor(out, contact)
                        writes.to_append.append(out)
                        accepted += 1
                        if outs is not None:
                            outs.append(out)
                        continue
                else:
                    client_id = isinstance(raw, dict) and raw.get("messageId") is not None
                    hold = h.held_entry(event, key, client_id, keep_contact)
                    if not isinstance(hold, list):
                        writes.to_hold.append(hold)
                        accepted += 1
                        if outs is not None:
                            outs.append(hold)
                        continue
                    out = hold
                errors = out
            item: dict[str, Any] = {"index": index}
            if isinstance(raw, dict) and isinstance(raw.get("messageId"), str):
                item["messageId"] = raw["messageId"]
            item["errors"] = [e.as_dict() for e in errors]
            rejected.append(item)
            if outs is not None:
                outs.append(errors)
        await writes.flush()
        counters = self.counters
        counters.accepted += accepted - writes.duplicates
        counters.duplicates += writes.duplicates
        counters.rejected += len(rejected)
        return {
            "accepted": accepted,
            "duplicates": writes.duplicates,
            "held": writes.held,
            "rejected": rejected,
            "anonymousId": anonymous_id,
        }

    def _with_defaults(self, raw: Any, now: int) -> Any:
        """The event with a messageId and timestamp of its own, so a held event keeps both."""
        if not isinstance(raw, dict):
            return raw
        event = dict(raw)
        event.pop("anonymousId", None)
        if event.get("messageId") is None:
            event["messageId"] = self.holding.new_id()
        if event.get("timestamp") is None:
            event["timestamp"] = now
        return event

    async def _check_room(self, batch: list[Any], key: str, contact: object) -> None:
        """SpoolFull, before anything of the request is stored, when what it may put in the
        queue would not fit (a refusal halfway would answer 503 for events already stored):
        every event of a known visitor; for an unknown one, if an event of the batch may
        identify it, the visitor's held events and the whole batch; else nothing (held
        events are never refused)."""
        if contact is not None:
            need = len(batch)
        elif any(isinstance(e, dict) and (e.get("type") == IDENTIFY or e.get("contact"))
                 for e in batch):  # fmt: skip
            need = len(await self.spool.held(key)) + len(batch)
        else:
            return
        if need > self.spool.room(self.holding.bound):
            raise SpoolFull(f"no room for the {need} events this request may queue")


async def sweep_held(settings: Settings, spool: Spool, metrics: Metrics) -> int:
    """Age out held events, remembered visitors and carts; count and return the held
    events that expired."""
    now = int(time.time() * 1000)
    expired = await spool.expire_held(
        now - settings.anonymous_max_age_s * 1000, now - settings.visitor_ttl_s * 1000
    )
    if expired:
        metrics.anonymous_expired.labels("age").inc(expired)
        log.info("%d anonymous events expired: their visitors did not identify in time", expired)
    carts = await spool.expire_carts(now - settings.cart_ttl_s * 1000, spool.max_events)
    if carts:
        log.info("%d remembered carts forgotten: unchanged for COLLECTOR_CART_TTL", carts)
    return expired


async def sweep_forever(settings: Settings, spool: Spool, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            await sweep_held(settings, spool, metrics)
        except SpoolError as exc:
            metrics.errors.labels("spool").inc()
            log.warning("could not age out held events: %s", exc)
