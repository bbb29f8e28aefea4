"""Segment's calls (its HTTP Tracking API) read, and mapped to the collector's own events.

Pure, like the rest of normalize: the receipt time is given, nothing is read or written.
`read_call` checks one call of a batch (or of /v1/track, /v1/page, ...) and works out its
time as Segment does; `map_call` turns a page, screen or track call into an inbound event
(`type`, `properties`) for `normalize_event`, with what it does to the shopper's cart. The
contact, the cart's products and the checks of Yespo's rules are the caller's: the same
ones every source uses. The mapping of Segment's E-commerce Spec v2 is the table `TRACKED`
below, which docs/segment.md prints.

A call that cannot become an event is a `Refused`, with a short reason (the metric's
label) and what exactly is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import FieldError
from .contact import IDENTIFIER_PARAMS
from .event_types import FORBIDDEN_IN_TYPE, MAX_EVENT_TYPE
from .values import MAX_ID, describe, epoch_ms, is_currency, is_message_id, number

# A run of the characters Yespo refuses in an event type.
_NOT_IN_TYPE = re.compile(FORBIDDEN_IN_TYPE.pattern + "+")
# Segment's own limits (its HTTP API documentation): a call of at most 32 KB, a request of
# at most 500 KB. Its SDKs batch below them, so a sender that works with Segment works here.
MAX_CALL_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
CALL_TYPES = ("track", "page", "screen", "identify", "alias", "group")
# The calls that can become a Yespo event; identify and alias name people, group is ignored.
EVENT_CALLS = frozenset({"track", "page", "screen"})
# A status Yespo takes for a new order: Order Completed is an order just placed.
NEW_ORDER_STATUS = "INITIALIZED"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a call cannot become a Yespo event: `reason` a short code, `detail` for people."""

    reason: str
    detail: str


@dataclass(slots=True)
class Call:
    """One Segment call, checked. Ids are strings (Segment takes numbers too).

    Not frozen, though nothing changes one after it is made: one is made per call, and a
    frozen dataclass sets each field through object.__setattr__ (as `Normalized` notes)."""

    type: str  # one of CALL_TYPES
    message_id: str | None  # the sender's, made fit for deduplication; None if it gave none
    user_id: str | None
    anonymous_id: str | None
    previous_id: str | None  # alias only
    at: int  # when it happened, epoch ms, corrected for the sender's clock (see `event_time`)
    event: str | None  # a track call's event name
    name: str | None  # a page's or screen's name
    properties: dict[str, Any]
    traits: dict[str, Any]  # identify's traits; for the other calls, context.traits
    context: dict[str, Any]


def event_time(original: int | None, sent_at: int | None, received_at: int) -> int:
    """Segment's `timestamp`: `receivedAt - (sentAt - originalTimestamp)`.

    The sender's clock may be off, but it is off by as much at `sentAt` as when the call
    was made, so the interval between the two, taken back from our own receipt time, is
    the call's time by our clock. Without `sentAt` the call's own time is taken as it is;
    without either, the receipt time."""
    if original is None:
        return received_at
    if sent_at is None:
        return original
    return received_at - (sent_at - original)


class _Invalid(Exception):
    """A call `read_call` refuses: raised by its checks, returned as a `Refused`."""


def _id(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Invalid(f"{name} must be a string or a number, got {describe(value)}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_ID:
        raise _Invalid(f"{name} must be at most {MAX_ID} characters, got {len(text)}")
    return text


def _message_id(value: object) -> str | None:
    """The sender's messageId; one our dedup cannot store as it is (too long, spaces) is
    replaced by a digest of it, so that a retried call is still recognised."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and is_message_id(value):
        return value
    text = value if isinstance(value, str) else repr(value)
    return "segment-" + hashlib.sha1(text.encode(errors="replace")).hexdigest()


def _object(raw: dict[str, Any], name: str, path: str = "") -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{path}{name} must be an object, got {describe(value)}")
    return value


def _time(value: object, name: str) -> int | None:
    if value is None:
        return None
    problems: list[FieldError] = []
    ms = epoch_ms(value, name, problems)
    if ms is None:
        raise _Invalid(f"{problems[0].field}: {problems[0].message}")
    return ms


def batch_sent_at(value: object) -> int | Refused | None:
    """A batch's `sentAt` (read once for all its calls)."""
    try:
        return _time(value, "sentAt")
    except _Invalid as exc:
        return Refused("invalid", str(exc))


def read_call(
    raw: object, call_type: str | None, sent_at: int | None, received_at: int
) -> Call | Refused:
    """One call: from /v1/batch (`call_type` None: the call's own `type`) or from its own
    endpoint (`call_type` from the path). `sent_at` is the batch's (`batch_sent_at`), for
    calls without one of their own."""
    if not isinstance(raw, dict):
        return Refused("invalid", f"a call must be a JSON object, got {describe(raw)}")
    kind = call_type or raw.get("type")
    if not isinstance(kind, str) or kind not in CALL_TYPES:
        return Refused(
            "invalid", f"type must be one of {', '.join(CALL_TYPES)}, got {describe(kind)}"
        )
    try:
        return _read(raw, kind, sent_at, received_at)
    except _Invalid as exc:
        return Refused("invalid", str(exc))


def _read(raw: dict[str, Any], kind: str, sent_at: int | None, received_at: int) -> Call | Refused:
    user_id, anonymous_id = _id(raw, "userId"), _id(raw, "anonymousId")
    previous_id = _id(raw, "previousId")
    if kind == "alias":
        if previous_id is None or user_id is None:
            return Refused("no_user", "alias needs previousId and userId")
    elif user_id is None and anonymous_id is None:
        return Refused("no_user", f"{kind} needs a userId or an anonymousId")
    context = _object(raw, "context")
    properties = _object(raw, "properties")
    traits = (
        _object(raw, "traits") if kind == "identify" else _object(context, "traits", "context.")
    )
    # originalTimestamp, when a sender gives it, is the device's time of the call; else
    # the call's timestamp is (Segment's SDKs send only that).
    given = raw.get("originalTimestamp")
    original = (
        _time(raw.get("timestamp"), "timestamp")
        if given is None
        else _time(given, "originalTimestamp")
    )
    own = raw.get("sentAt")
    sent = sent_at if own is None else _time(own, "sentAt")
    event = raw.get("event")
    if kind == "track" and (not isinstance(event, str) or not event.strip()):
        raise _Invalid(f"track needs the event's name, got {describe(event)}")
    name = raw.get("name")
    return Call(
        type=kind,
        message_id=_message_id(raw.get("messageId")),
        user_id=user_id,
        anonymous_id=anonymous_id,
        previous_id=previous_id,
        at=event_time(original, sent, received_at),
        event=event if kind == "track" else None,
        name=name if isinstance(name, str) and name else None,
        properties=properties,
        traits=traits,
        context=context,
    )


# --- the mapping -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CartChange:
    """What a call does to the shopper's remembered cart: `add` or `remove` its one product
    line, `replace` the cart by its lines, `keep` it as it is, or `empty` it."""

    op: str
    lines: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True)
class Mapped:
    """The inbound event a call becomes (its `type` and `properties`; the caller adds the
    messageId, the time and the contact) and what it does to the cart. A cartUpdated's
    `products` come from the cart after the change."""

    event_type: str
    properties: dict[str, Any]
    cart: CartChange | None = None


Mapper = Callable[[Call], "Mapped | Refused"]


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _product_id(props: dict[str, Any]) -> Any:
    """Spec v2's product_id, else the sku (else v1's id)."""
    for name in ("product_id", "sku", "id"):
        value = props.get(name)
        if value is not None and value != "":
            return value
    return None


def _described(props: dict[str, Any]) -> dict[str, Any]:
    """What describes a product, under Yespo's names."""
    return _present(
        name=props.get("name"),
        category=props.get("category"),
        brand=props.get("brand"),
        variant=props.get("variant"),
        url=props.get("url"),
        imageUrl=props.get("image_url"),
    )


def _page(call: Call) -> Mapped | Refused:
    page = call.context.get("page")
    page = page if isinstance(page, dict) else {}
    props = call.properties
    url = props.get("url") or page.get("url")
    if url is None and call.type == "screen" and call.name:
        # A screen has no URL; Yespo takes a deep link, so the screen's name becomes one.
        url = "screen://" + quote(call.name, safe="")
    if url is None:
        return Refused("no_url", f"{call.type} has no properties.url (nor context.page.url)")
    return Mapped(
        "pageViewed",
        _present(
            location=url,
            title=props.get("title") or page.get("title") or call.name,
            path=props.get("path") or page.get("path"),
        ),
    )


def _product_viewed(call: Call) -> Mapped | Refused:
    props = call.properties
    product_id = _product_id(props)
    if product_id is None:
        return Refused("no_product_id", f"{call.event}: the product has no product_id or sku")
    sku = props.get("sku") if props.get("product_id") not in (None, "") else None
    return Mapped(
        "productViewed",
        _present(
            productId=product_id,
            price=props.get("price"),
            quantity=props.get("quantity"),
            currencyCode=props.get("currency"),
            sku=sku,
            **_described(props),
        ),
    )


def _category_viewed(call: Call) -> Mapped | Refused:
    props = call.properties
    category = props.get("category") or props.get("list_id")
    if category is None:
        return Refused("no_category", f"{call.event}: has no category (nor list_id)")
    return Mapped("productCategoryViewed", {"productCategoryId": category})


def _line(props: dict[str, Any], *, added: bool, what: str) -> dict[str, Any] | Refused:
    """A product as a line of the remembered cart, checked: a wrong line would spoil every
    later cartUpdated of the cart. `added`: the line's price is needed (Yespo's carts have
    one per product); a removed product needs only its id."""
    product_id = _product_id(props)
    if product_id is None:
        return Refused("no_product_id", f"{what}: the product has no product_id or sku")
    if isinstance(product_id, bool) or not isinstance(product_id, (str, int)):
        return Refused(
            "bad_product", f"{what}: product_id must be a string, got {describe(product_id)}"
        )
    line: dict[str, Any] = {"productId": str(product_id)}
    given = props.get("quantity")
    if given is not None:
        quantity = number(given)
        if quantity is None or quantity <= 0:
            return Refused(
                "bad_product",
                f"{what}: quantity must be a number greater than 0, got {describe(given)}",
            )
        line["quantity"] = quantity
    price = props.get("price")
    if price is not None:
        amount = number(price)
        if amount is None or amount < 0:
            return Refused(
                "bad_product", f"{what}: price must be a number >= 0, got {describe(price)}"
            )
        line["price"] = amount
    elif added:
        return Refused("bad_product", f"{what}: the product has no price (Yespo's carts need one)")
    if added:
        line.update(_described(props))
    return line


def _cart_event(call: Call, change: CartChange) -> Mapped:
    currency = call.properties.get("currency")
    return Mapped("cartUpdated", _present(currencyCode=currency), change)


def _product_added(call: Call) -> Mapped | Refused:
    line = _line(call.properties, added=True, what=str(call.event))
    return line if isinstance(line, Refused) else _cart_event(call, CartChange("add", (line,)))


def _product_removed(call: Call) -> Mapped | Refused:
    line = _line(call.properties, added=False, what=str(call.event))
    return line if isinstance(line, Refused) else _cart_event(call, CartChange("remove", (line,)))


def _cart_viewed(call: Call) -> Mapped | Refused:
    products = call.properties.get("products")
    if products is None:
        return _cart_event(call, CartChange("keep"))
    if not isinstance(products, list) or not all(isinstance(p, dict) for p in products):
        return Refused("bad_product", f"{call.event}: products must be an array of objects")
    lines = []
    for i, product in enumerate(products):
        line = _line(product, added=True, what=f"{call.event}: products[{i}]")
        if isinstance(line, Refused):
            return line
        lines.append(line)
    return _cart_event(call, CartChange("replace", tuple(lines)))


def _items(products: object) -> object:
    """Spec v2's products as Yespo's order items; anything else is left for the checks."""
    if not isinstance(products, list):
        return products
    items = []
    for product in products:
        if not isinstance(product, dict):
            items.append(product)
            continue
        described = _described(product)
        items.append(
            _present(
                externalItemId=_product_id(product),
                name=described.pop("name", None),
                quantity=product.get("quantity", 1),
                cost=product.get("price"),
                url=described.pop("url", None),
                imageUrl=described.pop("imageUrl", None),
                **described,
            )
        )
    return items


def _order(call: Call, created: bool) -> dict[str, Any]:
    props = call.properties
    total = props.get("total")
    return _present(
        externalOrderId=props.get("order_id"),
        totalCost=props.get("revenue") if total is None else total,
        status=NEW_ORDER_STATUS if created else None,
        date=call.at if created else None,
        currency=props.get("currency"),
        items=_items(props.get("products")),
        shipping=props.get("shipping"),
        tax=props.get("tax"),
        discount=props.get("discount"),
        coupon=props.get("coupon"),
    )


def _order_completed(call: Call) -> Mapped | Refused:
    return Mapped("orderCreated", _order(call, created=True), CartChange("empty"))


def _order_updated(call: Call) -> Mapped | Refused:
    return Mapped("orderUpdated", _order(call, created=False))


def _order_cancelled(call: Call) -> Mapped | Refused:
    return Mapped("orderCancelled", _present(externalOrderId=call.properties.get("order_id")))


# Segment's E-commerce Spec v2 -> Yespo, by event name (case, spaces and underscores aside).
# docs/segment.md prints this table with each mapper's fields.
TRACKED: dict[str, tuple[str, Mapper]] = {
    "product viewed":          ("productViewed", _product_viewed),
    "product list viewed":     ("productCategoryViewed", _category_viewed),
    "product category viewed": ("productCategoryViewed", _category_viewed),
    "product added":           ("cartUpdated", _product_added),     # the whole cart after it
    "product removed":         ("cartUpdated", _product_removed),   # the whole cart after it
    "cart viewed":             ("cartUpdated", _cart_viewed),       # its products are the cart
    "order completed":         ("orderCreated", _order_completed),  # and the cart is emptied
    "order updated":           ("orderUpdated", _order_updated),
    "order cancelled":         ("orderCancelled", _order_cancelled),
    "order refunded":          ("orderCancelled", _order_cancelled),
}  # fmt: skip
_CART_MAPPERS = frozenset({_product_added, _product_removed, _cart_viewed, _order_completed})


@functools.lru_cache(maxsize=1024)  # a shop sends a few dozen names, over and over
def spec_name(event: str) -> str:
    """`Product Added`, `product_added` and `Product  added` are one event of the spec."""
    return " ".join(event.replace("_", " ").lower().split())


def custom_type(event: str) -> str:
    """A track call outside the spec becomes a custom Yespo event of its name, made
    Yespo-safe: each run of what Yespo refuses in a type (``< ; ' \\ / | " ` ^ ? ! , >``,
    spaces, control characters) becomes one ``_``, none at either end, at most 100
    characters. `Signed Up` -> `Signed_Up`."""
    return _NOT_IN_TYPE.sub("_", event).strip("_")[:MAX_EVENT_TYPE]


def _custom(call: Call, event_type: str) -> Mapped | Refused:
    if not event_type:
        return Refused(
            "invalid", f"event name {describe(call.event)} has nothing Yespo takes in a type"
        )
    # A property named like a contact identifier would attach the event to that contact in
    # Yespo; the contact comes from identify, so such properties are left out.
    props = {k: v for k, v in call.properties.items() if str(k).lower() not in IDENTIFIER_PARAMS}
    return Mapped(event_type, props)


def changes_cart(call: Call) -> bool:
    """Whether the call changes (or shows) the shopper's remembered cart."""
    if call.type != "track" or call.event is None:
        return False
    found = TRACKED.get(spec_name(call.event))
    return found is not None and found[1] in _CART_MAPPERS


def map_call(call: Call, custom_events: bool = True) -> Mapped | Refused | None:
    """A page, screen or track call as an inbound event; None for a track call outside the
    spec when `custom_events` is off (left out by the operator's choice)."""
    if call.type in ("page", "screen"):
        return _page(call)
    assert call.event is not None
    found = TRACKED.get(spec_name(call.event))
    if found is not None:
        return found[1](call)
    if not custom_events:
        return None
    return _custom(call, custom_type(call.event))


def currency_of(mapped: Mapped) -> str | None:
    """The currency a cart event names, if it is one (a cart remembers only real ones)."""
    code = mapped.properties.get("currencyCode")
    return code.upper() if is_currency(code) else None
