"""One Segment request's calls, taken in order, for the people they name.

Segment names a person by `userId` (the shop's id) and `anonymousId` (a device's). Each
name is a key of the spool's `VisitorStore` (the one the browser endpoint uses):
``segment:u:<userId>`` and ``segment:a:<anonymousId>``. A person's main key is its userId's
once one is known, else its anonymousId's; the main key remembers the person's contact, and
each other name remembers only that it is another name of the main key (``{"sameAs": key}``).
identify, alias, and any call that names both ids tie names together that way.

A call of a person whose contact is not known yet is checked and held under the main key
(the browser's machinery, `Holding`), and released in the order it came when an identify
names the contact. The person's cart is remembered under the main key too, so that the
person's lock (one request of a person at a time) also keeps its cart's changes in order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ...errors import FieldError
from ...normalize import Normalized, normalize_event
from ...normalize.cart_state import Cart, apply
from ...normalize.orders import ORDER_EVENT_TYPES
from ...normalize.segment import EVENT_CALLS, Call, Refused, changes_cart, map_call
from ...spool import Rejected
from ..visitors import Holding, Writes

log = logging.getLogger("collector.segment")

USER = "segment:u:"
ANONYMOUS = "segment:a:"
SAME_AS = "sameAs"
# Links followed from a name to its main key: alias of an alias of an alias is the most a
# shop's history makes; a loop (two aliases the other way round) stops here.
MAX_LINKS = 4
# Where a call's identify traits are said to be wrong: the contact's fields as Segment names them.
_TRAIT_PATHS = {
    "contact.email": "traits.email",
    "contact.phone": "traits.phone",
    "contact.externalCustomerId": "userId",
}


def names(call: Call) -> list[str]:
    """The keys a call names: its userId's and anonymousId's; for alias, its userId's and
    both that previousId may be (Segment's previousId is an anonymousId or an older userId)."""
    if call.type == "alias":
        assert call.user_id is not None and call.previous_id is not None
        return [USER + call.user_id, USER + call.previous_id, ANONYMOUS + call.previous_id]
    out = []
    if call.user_id is not None:
        out.append(USER + call.user_id)
    if call.anonymous_id is not None:
        out.append(ANONYMOUS + call.anonymous_id)
    return out


@dataclass
class Outcome:
    """What became of one request's calls: counts, and the calls refused (to keep)."""

    events: int = 0  # page, screen and track calls
    accepted: int = 0  # events queued or held (duplicates included), identify and alias taken
    refused: list[Rejected] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)


class People:
    """The people one request's calls name, what the spool remembers of them, their carts,
    and the request's writes. Used under the locks of every key it loads (`lock_keys`)."""

    def __init__(self, holding: Holding, now: int, custom_events: bool) -> None:
        self.holding = holding
        self.spool = holding.spool
        self.now = now
        self.custom_events = custom_events
        self.writes: Writes = holding.writes(now)
        self.outcome = Outcome()
        self._remembered: dict[str, dict[str, Any]] = {}
        self._loaded: set[str] = set()
        self._carts: dict[str, Cart] = {}
        self._dirty: set[str] = set()
        self._ordered = False  # a cart's event waits to be written

    # -- what the spool remembers ----------------------------------------------------------

    async def load(self, keys: Sequence[str]) -> None:
        """Read what `keys` remember, and the main keys they link to."""
        since = self.now - self.holding.settings.visitor_ttl_s * 1000
        wanted = [k for k in dict.fromkeys(keys) if k not in self._loaded]
        for _ in range(MAX_LINKS + 1):
            if not wanted:
                break
            found = await self.spool.contacts_of(wanted, since)
            self._loaded.update(wanted)
            for key, value in found.items():
                self._remembered[key] = orjson.loads(value)
            targets = [self._remembered[k].get(SAME_AS) for k in found]
            wanted = [t for t in targets if isinstance(t, str) and t not in self._loaded]

    def lockless(self, calls: Sequence[Call]) -> bool:
        """Whether the calls can be taken without the people's locks: each an event of a
        person whose contact is known, that ties no names, names no contact of its own
        and leaves the cart alone (the usual batch of a server that identified its users).
        Nothing is held then, nothing remembered changes, no cart: the locks guard none of
        it, and such a batch is taken as /v1/events takes one."""
        for call in calls:
            if call.type not in EVENT_CALLS or call.traits or changes_cart(call):
                return False
            roots = {self.root(k) for k in names(call)}
            if len(roots) != 1 or self.contact(roots.pop()) is None:
                return False
        return True

    def lock_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys a request naming `keys` must hold: each, and its main key."""
        return {*keys, *(self.root(k) for k in keys)}

    def root(self, key: str) -> str:
        """The main key of the person `key` names."""
        for _ in range(MAX_LINKS):
            target = self._remembered.get(key, {}).get(SAME_AS)
            if not isinstance(target, str):
                break
            key = target
        return key

    def contact(self, main: str) -> dict[str, Any] | None:
        value = self._remembered.get(main)
        return None if value is None or SAME_AS in value else value

    # -- ties between names -----------------------------------------------------------------

    async def tie(self, main: str, others: Sequence[str], contact: dict[str, Any] | None) -> None:
        """Make `others` (main keys until now) names of `main`; with a contact, remember it
        for `main` and release what was held under any of them. Without one, what `others`
        held is moved under `main`, to be released when the contact is known. Their carts
        join `main`'s."""
        others = [k for k in dict.fromkeys(others) if k != main]
        if contact is None and not others:
            return
        await self.flush()  # what this request decided before must be in place first
        for other in others:
            self._join_carts(main, other)
        await self.flush_carts()
        if contact is not None:
            known = self.contact(main) == contact
            await self.holding.release([main, *others], contact, self.now, known=known)
            self._remembered[main] = contact
        link = orjson.dumps({SAME_AS: main})
        for other in others:
            held = [] if contact is not None else await self.spool.held(other)
            if held:
                # Their messageIds were claimed when they were first held: copies claim
                # none. (A crash between the two commits leaves both: at least once.)
                copies = [
                    Normalized(r.message_id, False, "held", main, r.event_type, r.event_time,
                               r.body)
                    for r in held
                ]  # fmt: skip
                _, dropped = await self.spool.hold(copies, self.now, self.holding.per_visitor)
                if dropped:
                    self.holding.metrics.anonymous_expired.labels("count").inc(dropped)
            await self.spool.identify(other, link, self.now, [r.seq for r in held])
            self._remembered[other] = {SAME_AS: main}

    # -- carts ------------------------------------------------------------------------------

    async def cart(self, main: str) -> Cart:
        cart = self._carts.get(main)
        if cart is None:
            cart = self._carts[main] = Cart.load(await self.spool.cart(main))
        return cart

    def _join_carts(self, main: str, other: str) -> None:
        # Called after `cart()` loaded both (see `tie`'s callers): a product in both keeps
        # the line of the name that joins (the newer one: a visitor who just logged in).
        if other not in self._carts or main not in self._carts:
            return
        joining = self._carts[other]
        if not joining.products:
            return
        target = self._carts[main]
        ids = {p["productId"] for p in joining.products}
        target.products = [p for p in target.products if p["productId"] not in ids]
        target.products += joining.products
        joining.products = []
        self._dirty.update((main, other))

    async def flush_carts(self) -> None:
        """Save the carts changed so far: before the events that carry them are committed,
        so that a crash in between shows up as a retried call, which the cart recognises."""
        if self._dirty:
            saved = {key: self._carts[key].dump() for key in self._dirty}
            await self.spool.save_carts(saved, self.now)
            self._dirty.clear()

    async def flush(self) -> None:
        await self.flush_carts()
        await self.writes.flush()
        self._ordered = False

    def needs_lock(self) -> bool:
        """Whether what is left to write must be written under the people's locks: held
        calls (an identify must not slip between their holding and their commit) and
        cart changes (a cart's states must reach the queue in the order they were made).
        Events of known people need no lock to be appended: the order of two requests
        that run at once is theirs to take."""
        return self._ordered or bool(self.writes.to_hold or self._dirty)

    # -- the calls --------------------------------------------------------------------------

    async def take(self, call: Call, raw: Any) -> None:
        """One call, in the request's order."""
        if call.type == "group":
            self.ignore("group")
        elif call.type in ("identify", "alias"):
            refused = len(self.outcome.refused)
            await (self._identify(call, raw) if call.type == "identify" else self._alias(call))
            self.outcome.accepted += len(self.outcome.refused) == refused
        else:
            self.outcome.events += 1
            await self._event(call, raw)

    def ignore(self, reason: str) -> None:
        self.outcome.ignored[reason] = self.outcome.ignored.get(reason, 0) + 1

    def refuse(self, raw: Any, refused: Refused) -> None:
        given = raw.get("messageId") if isinstance(raw, dict) else None
        message_id = given if isinstance(given, str) else None
        try:
            body = orjson.dumps(raw)
        except TypeError:  # a number JSON cannot carry: kept as text
            body = orjson.dumps(repr(raw))
        self.outcome.refused.append(
            Rejected("segment", refused.reason, refused.detail, message_id, body, self.now)
        )

    def _identity(self, call: Call, traits: dict[str, Any]) -> dict[str, Any] | Refused | None:
        """The contact a call's traits (with its userId as externalCustomerId) name; None
        when they name no email or phone (the call then only ties names)."""
        given = {name: traits.get(name) for name in ("email", "phone")}
        if all(v is None or v == "" for v in given.values()):
            return None
        given = {k: v for k, v in given.items() if v is not None and v != ""}
        if call.user_id is not None:
            given["externalCustomerId"] = call.user_id
        errors: list[FieldError] = []
        contact = self.holding.identity(given, errors)
        if contact is None:
            detail = "; ".join(f"{_TRAIT_PATHS.get(e.field, e.field)}: {e.message}" for e in errors)
            return Refused("bad_contact", detail)
        return contact

    async def _identify(self, call: Call, raw: Any) -> None:
        keys = names(call)
        main, *others = [self.root(k) for k in keys]
        contact = self._identity(call, call.traits)
        if isinstance(contact, Refused):
            self.refuse(raw, contact)
            return
        for key in (main, *others):
            await self.cart(key)
        await self.tie(main, others, contact)

    async def _alias(self, call: Call) -> None:
        main_name, *previous = names(call)
        main = self.root(main_name)
        # previousId is an anonymousId or an older userId: both its names join the user.
        others = [self.root(k) for k in previous]
        contact = self.contact(main) or next(filter(None, map(self.contact, others)), None)
        for key in (main, *others):
            await self.cart(key)
        await self.tie(main, others, contact)

    async def _person(self, call: Call) -> tuple[str, dict[str, Any] | None]:
        """The call's main key and contact. A call that names two people's keys ties them
        (it says they are one), and one whose context.traits name a new contact (mobile
        SDKs send the user's traits with every call) identifies, as identify would."""
        keys = names(call)
        if len(keys) == 1 and not call.traits:  # the usual call: one name, nothing to tie
            main = self.root(keys[0])
            return main, self.contact(main)
        roots = list(dict.fromkeys(self.root(k) for k in keys))
        main, others = roots[0], roots[1:]
        contact = self.contact(main)
        if contact is None:
            contact = next((c for c in map(self.contact, others) if c is not None), None)
        traits = self._identity(call, call.traits)
        if isinstance(traits, dict) and traits != contact:
            contact = traits
        elif not others and contact == self.contact(main):
            return main, contact  # nothing to tie, nothing new to remember
        for key in roots:
            await self.cart(key)
        await self.tie(main, others, contact)
        return main, contact

    async def _event(self, call: Call, raw: Any) -> None:
        mapped = map_call(call, self.custom_events)
        if mapped is None:
            self.ignore("custom_events_off")
            return
        if isinstance(mapped, Refused):
            self.refuse(raw, mapped)
            return
        main, contact = await self._person(call)
        properties = mapped.properties  # made for this call: the event may take it
        cart = None
        if mapped.cart is not None:
            cart = (await self.cart(main)).copy()
            problem = apply(cart, mapped.cart, call.message_id)
            if problem is not None:
                self.refuse(raw, Refused("cart_full", problem))
                return
            if mapped.event_type == "cartUpdated":
                properties["products"] = cart.lines()
        event: dict[str, Any] = {
            "type": mapped.event_type,
            "messageId": call.message_id or self.holding.new_id(),
            "timestamp": call.at,
            "properties": properties,
        }
        out = await self._entry(event, main, contact, call)
        if isinstance(out, list):
            detail = "; ".join(f"{e.field}: {e.message}" for e in out)
            self.refuse(raw, Refused("invalid_event", f"{mapped.event_type}: {detail}"))
            return
        if cart is not None:  # the cart changes with the event, not without it
            self._carts[main] = cart
            self._dirty.add(main)
            self._ordered = True
        self.outcome.accepted += 1

    async def _entry(
        self, event: dict[str, Any], main: str, contact: dict[str, Any] | None, call: Call
    ) -> Normalized | list[FieldError]:
        """Queue the event with the contact, or hold it under the main key; its errors."""
        h, writes = self.holding, self.writes
        client_id = call.message_id is not None
        keep_contact = False
        if contact is None and event["type"] in ORDER_EVENT_TYPES and call.user_id is not None:
            # An order names its customer by userId (externalCustomerId), which Yespo's
            # orders take: it goes now, unless earlier calls of the person wait, which it
            # must not overtake; then it waits behind them, keeping its customer.
            event["contact"] = {"externalCustomerId": call.user_id}
            keep_contact = any(e.key == main for e in writes.to_hold) or bool(
                await self.spool.held(main)
            )
            if not keep_contact:
                contact = event["contact"]
        if contact is not None:
            event["contact"] = contact
            out = normalize_event(event, h.rules, h.new_id)
            if isinstance(out, Normalized):
                writes.to_append.append(out)
            return out
        out = h.held_entry(event, main, client_id, keep_contact)
        if isinstance(out, Normalized):
            writes.to_hold.append(out)
        return out


@contextlib.asynccontextmanager
async def locked(holding: Holding, keys: Iterable[str]) -> AsyncIterator[None]:
    """The spool's lock of each key, taken in one order (sorted) so that two requests naming
    the same people cannot each wait for the other. (A hundred of them per batch: entered
    and left by hand, which costs half of what an AsyncExitStack does.)"""
    held = []
    try:
        for key in sorted(set(keys)):
            lock = holding.spool.visitor_lock(key)
            await lock.__aenter__()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            await lock.__aexit__(None, None, None)
