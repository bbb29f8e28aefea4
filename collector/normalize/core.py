"""The entry points of normalization: an inbound event becomes a Yespo request body, or a
precise error.

Three entry points, all pure (no I/O, no clock; ids come from the injected `new_id`):

    normalize_event        the collector's own inbound form (`type`, `contact`, `properties`)
    normalize_yespo_event  a body already in Yespo's Generate-event form (`eventTypeKey`, `params`)
    normalize_order        one order of Yespo's Add-orders body

Each returns a `Normalized` ready to spool, or a non-empty list of `FieldError`s naming every
problem found, with a path into the input as the sender wrote it. None of them raises on
JSON-shaped input. The rules come from Yespo's guides (summed up in the README): Yespo
drops or silently ignores events that break them, so the sender must hear about it here.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import FieldError
from . import orders
from .contact import (
    CONTACT_FIELDS,
    IDENTIFIER_PARAMS,
    IDENTIFYING_FIELDS,
    MAX_CONTACT_VALUE,
    ORDER_CONTACT_FIELDS,
    contact_params,
    identity_problem,
    key_value,
    normalize_contact,
)
from .event_types import (
    CUSTOM,
    HANDLERS,
    PACKED,
    FastHandler,
    Handler,
    custom_type_problem,
    split_params,
)
from .inbound import Event
from .values import (
    Errors,
    Paths,
    describe,
    epoch_ms,
    is_message_id,
    json_text,
    message_id,
    param_text,
    required,
    text,
    unknown_keys,
)

# Yespo's limit on a Generate-event body is "20 KB"; we take the stricter reading.
MAX_BODY_BYTES = 20_000
# Yespo's limit on keyValue.
MAX_KEY_VALUE = MAX_CONTACT_VALUE
# The anonymous id is a browser cookie value; bounded like any other id we accept.
MAX_ANONYMOUS_ID = 200

_EVENT_KEYS = ("type", "messageId", "timestamp", "contact", "properties", "context", "anonymousId")
_EVENT_KEY_SET = frozenset(_EVENT_KEYS)
_YESPO_KEYS = ("eventTypeKey", "keyValue", "params", "messageId")
_YESPO_KEY_SET = frozenset(_YESPO_KEYS)
# The property names of Yespo's types: none is a contact identifier, so the fast path need not
# look them up (the `if` only guards against a typo here).
_STANDARD_NAMES = frozenset(
    name
    for name in (
        *("location", "productId", "price", "isInStock", "quantity", "currencyCode"),
        *("productCategoryId", "products", "recycleStateId"),
        *("externalOrderId", "totalCost", "status", "date", "currency", "items", "shipping"),
    )
    if name.lower() not in IDENTIFIER_PARAMS
)


@dataclass(frozen=True, slots=True)
class Rules:
    """Normalization settings (built from the app's Settings).

    `key_value_order`: the contact fields tried, in order, for keyValue. `identifying`: an
    event other than an order event must carry one of these (empty: no such check).
    `timezone`: the zone order dates are written in. `check_order_total`: reject orders
    whose items (plus shipping) do not add up to totalCost. `phone_region`: the region
    whose national phone numbers are taken (None: international numbers only).
    """

    key_value_order: tuple[str, ...] = CONTACT_FIELDS
    identifying: tuple[str, ...] = IDENTIFYING_FIELDS
    timezone: datetime.tzinfo = datetime.UTC
    check_order_total: bool = True
    phone_region: str | None = None


@dataclass(slots=True)
class Normalized:
    """One request body for Yespo, with what the spool needs to order and deduplicate it.

    Not frozen, though nothing changes one after it is made: a frozen dataclass sets each
    field through object.__setattr__, and making one took 460 ns against 140, for every
    event."""

    message_id: str  # the sender's messageId, or new_id() when it gave none
    client_id: bool  # True when the sender gave the messageId (only those are deduplicated)
    kind: str  # "event" (to Yespo Generate event) or "order" (to Yespo Add orders)
    key: str  # ordering key: "order:<externalOrderId>" for orders, else "contact:<keyValue>"
    event_type: str  # eventTypeKey (or "order" for kind "order")
    event_time: int | None  # the sender's timestamp as epoch milliseconds, if it gave one
    body: bytes  # orjson bytes of the Generate-event body (or of the Add-orders order object)
    # An order's contact key ("contact:<keyValue>", as that contact's own events have): the
    # spool hands the order out only after the contact's events accepted before it.
    after: str | None = None


_PROPERTIES = Paths("properties")


# --- the shared core -------------------------------------------------------------------------


def _event(
    *,
    event_type: object,
    type_path: str,
    mid: str | None,
    client_id: bool,
    event_time: int | None,
    contact: dict[str, str | None] | None,
    contact_path: str,
    given_key_value: str | None,
    props: dict[Any, Any] | None,
    at: Paths,
    extra: list[tuple[str, object]],
    rules: Rules,
    new_id: Callable[[], str],
    errors: Errors,
) -> Normalized | list[FieldError]:
    """Checks and builds one Generate-event body; `None` marks an input already reported."""
    handlers: tuple[FastHandler, Handler] | None = None
    type_name = ""
    if isinstance(event_type, str):
        type_name = event_type
        handlers = HANDLERS.get(event_type)
        if handlers is None:
            problem = custom_type_problem(event_type)
            if problem is None:
                handlers = CUSTOM
            else:
                errors.append(FieldError(type_path, problem))
    elif event_type is not None:
        errors.append(FieldError(type_path, f"must be a string, got {describe(event_type)}"))

    is_order = type_name in orders.ORDER_EVENT_TYPES
    kv = given_key_value
    if contact is not None:
        problem = identity_problem(contact, is_order, rules.identifying)
        if problem is not None:
            errors.append(FieldError(contact_path, problem))
        elif kv is None:
            kv = key_value(contact, rules.key_value_order)
            if kv is None and None not in contact.values():
                errors.append(
                    FieldError(
                        contact_path,
                        f"has none of the keyValue fields ({', '.join(rules.key_value_order)}), "
                        "so there is no keyValue to send",
                    )
                )

    if mid is None:
        mid = new_id()
    params: list[tuple[str, str]] = []
    if handlers is not None and props is not None:
        fast, handler = handlers
        fast_params = fast(props, mid, rules.timezone, rules.check_order_total)
        params = (
            handler(props, at, errors, mid, rules.timezone, rules.check_order_total)
            if fast_params is None
            else fast_params
        )
    for name, value in extra:
        value_text = param_text(value, at(name), errors)
        if value_text is not None:
            params.append((name, value_text))
    if errors or contact is None or kv is None:
        return errors or [FieldError(contact_path, "names no contact")]
    # A contact's events are ordered by its identifier as normalized, not by the sender's
    # keyValue as written, so that both entry points order one contact's events together.
    ordering = key_value(contact, rules.key_value_order) if given_key_value is not None else None
    return _body(
        type_name, kv, contact, params, at.base, mid, client_id, event_time, is_order, ordering
    )


def _body(
    type_name: str,
    kv: str,
    contact: dict[str, str | None],
    params: list[tuple[str, str]],
    base: str,
    mid: str,
    client_id: bool,
    event_time: int | None,
    is_order: bool,
    ordering: str | None = None,
) -> Normalized | list[FieldError]:
    """The Generate-event body of a checked event, if it is within Yespo's size limit;
    `ordering` is the contact's key when it is not `kv`."""
    entries = contact_params(contact)
    for name, value in params:  # a loop: cheaper than a comprehension in Python 3.11
        entries.append({"name": name, "value": value})
    body = {"eventTypeKey": type_name, "keyValue": kv, "params": entries}
    try:
        data = orjson.dumps(body)
    except TypeError:  # a lone surrogate in some text; JSON parsers never produce one
        return [FieldError(base, "holds text that is not valid Unicode")]
    if len(data) > MAX_BODY_BYTES:
        return [
            FieldError(
                base,
                f"make a Yespo event of {len(data):,} bytes; Yespo accepts at most {MAX_BODY_BYTES:,} "
                "bytes (20 KB) per event: send less",
            )
        ]
    contact_key = f"contact:{ordering or kv}"
    if is_order:  # an order event's params start with its externalOrderId
        key = f"order:{params[0][1]}"
        return Normalized(mid, client_id, "event", key, type_name, event_time, data, contact_key)
    return Normalized(mid, client_id, "event", contact_key, type_name, event_time, data)


# --- the public entry points ---------------------------------------------------------------


def normalize_event(
    raw: object, rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError]:
    """An inbound event (`type`, `contact`, `properties`, ...) as a Yespo Generate-event body."""
    if type(raw) is dict:
        result = _fast_event(raw, rules, new_id)
        if result is not None:
            return result
    return _checked_event(raw, rules, new_id)


def normalize_inbound(
    event: Event, rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError]:
    """`normalize_event` of an event `inbound.decode` read: the same result and errors."""
    result = _fast_fields(
        event.type,
        event.messageId,
        event.timestamp,
        True,  # decode refused any context that is not an object or null
        event.anonymousId,
        event.contact,
        event.properties,
        rules,
        new_id,
    )
    return _checked_event(event.as_dict(), rules, new_id) if result is None else result


def _fast_event(
    raw: dict[Any, Any], rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError] | None:
    """`normalize_event` in one pass for an event whose fields outside `properties` are right.

    None, before any id is drawn, when one of them is off or unusual: `_checked_event` then
    reports it. The properties go through the type's fast path and, when that is not sure,
    its handler, as in `_event`. Checkers get a scratch list: they return None exactly when
    they complain.
    """
    if not _EVENT_KEY_SET.issuperset(raw):
        return None
    get = raw.get
    context = get("context")
    return _fast_fields(
        get("type"),
        get("messageId"),
        get("timestamp"),
        context is None or type(context) is dict,
        get("anonymousId"),
        get("contact"),
        get("properties"),
        rules,
        new_id,
    )


def _fast_fields(
    type_name: object,
    raw_id: Any,
    event_time: Any,
    context_ok: bool,
    anonymous_id: object,
    raw_contact: object,
    props: object,
    rules: Rules,
    new_id: Callable[[], str],
) -> Normalized | list[FieldError] | None:
    """`_fast_event` on the event's fields, however they were read (dict or `inbound.Event`)."""
    if type(type_name) is not str:
        return None
    handlers = HANDLERS.get(type_name)
    if handlers is None:
        if custom_type_problem(type_name) is not None:
            return None
        handlers = CUSTOM
    if (
        (raw_id is not None and not is_message_id(raw_id))
        or (event_time is not None and (event_time := epoch_ms(event_time, "", [])) is None)
        or not context_ok
        or not (anonymous_id is None or _is_anonymous_id(anonymous_id))
    ):
        return None
    if type(raw_contact) is not dict:
        return None
    scratch: Errors = []
    contact = normalize_contact(raw_contact, scratch, phone_region=rules.phone_region)
    if scratch:
        return None
    # identity_problem and key_value, spelled out: this runs for every event.
    is_order = type_name in orders.ORDER_EVENT_TYPES
    names = contact.keys()
    if is_order:
        if names.isdisjoint(ORDER_CONTACT_FIELDS):
            return None
    elif rules.identifying and names.isdisjoint(rules.identifying):
        return None
    kv = None
    for field in rules.key_value_order:
        kv = contact.get(field)
        if kv is not None:
            break
    if props is None:
        props = {}
    elif type(props) is not dict:
        return None
    for name in props:
        if name not in _STANDARD_NAMES and (
            type(name) is not str or not name or name.lower() in IDENTIFIER_PARAMS
        ):
            return None
    if kv is None:
        return None

    mid = new_id() if raw_id is None else raw_id
    fast, handler = handlers
    params = fast(props, mid, rules.timezone, rules.check_order_total)
    if params is None:
        errors: Errors = []
        params = handler(props, _PROPERTIES, errors, mid, rules.timezone, rules.check_order_total)
        if errors:
            return errors
    return _body(
        type_name, kv, contact, params, "properties", mid, raw_id is not None, event_time, is_order
    )


def _is_anonymous_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ANONYMOUS_ID


def _checked_event(
    raw: object, rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError]:
    """`normalize_event` with every check spelled out: it reports every problem it finds."""
    if not isinstance(raw, dict):
        return [FieldError("", f"an event must be a JSON object, got {describe(raw)}")]
    errors: Errors = []
    if not _EVENT_KEY_SET.issuperset(raw):
        unknown_keys(raw, _EVENT_KEYS, "an event", errors)

    event_type = raw.get("type")
    if event_type is None:
        errors.append(required("type", "the event's type, e.g. pageViewed"))
    raw_id = raw.get("messageId")
    mid = None if raw_id is None else message_id(raw_id, "messageId", errors)
    timestamp = raw.get("timestamp")
    event_time = None if timestamp is None else epoch_ms(timestamp, "timestamp", errors)
    context = raw.get("context")
    if context is not None and not isinstance(context, dict):
        errors.append(FieldError("context", f"must be an object, got {describe(context)}"))
    anonymous_id = raw.get("anonymousId")
    if anonymous_id is not None and not _is_anonymous_id(anonymous_id):
        errors.append(
            FieldError("anonymousId", f"must be a string of at most {MAX_ANONYMOUS_ID} characters")
        )

    raw_contact = raw.get("contact", {})
    contact: dict[str, str | None] | None = None
    if isinstance(raw_contact, dict):
        before = len(errors)
        contact = normalize_contact(raw_contact, errors, phone_region=rules.phone_region)
        if len(errors) > before and not contact:
            # Only unknown keys (typos such as "mail"): saying "no contact" too would be noise.
            contact = None
    elif raw_contact is not None:
        errors.append(
            FieldError("contact", f"must be an object of identifiers, got {describe(raw_contact)}")
        )
    else:
        contact = {}

    props = raw.get("properties", {})
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        errors.append(FieldError("properties", f"must be an object, got {describe(props)}"))
        props = None
    else:
        for name in props:
            if not isinstance(name, str) or not name:
                errors.append(
                    FieldError(f"properties.{name}", "a property needs a non-empty string name")
                )
                continue
            field = IDENTIFIER_PARAMS.get(name.lower())
            if field is not None:
                errors.append(
                    FieldError(
                        f"properties.{name}",
                        f"is a contact identifier for Yespo and would attach the event to that contact; "
                        f"put it in contact.{field}",
                    )
                )

    return _event(
        event_type=event_type,
        type_path="type",
        mid=mid,
        client_id=raw_id is not None,
        event_time=event_time,
        contact=contact,
        contact_path="contact",
        given_key_value=None,
        props=props,
        at=_PROPERTIES,
        extra=[],
        rules=rules,
        new_id=new_id,
        errors=errors,
    )


def normalize_yespo_event(
    raw: object, rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError]:
    """A body in Yespo's own Generate-event form, checked by the same rules as `normalize_event`.

    Identifier params (Email, SMS, ContactId, ...) become the contact; packed params (`page`,
    `product`, `category`, `products`, `items`) are parsed back. The sender's keyValue is kept.
    """
    if not isinstance(raw, dict):
        return [FieldError("", f"a Yespo event must be a JSON object, got {describe(raw)}")]
    errors: Errors = []
    if not _YESPO_KEY_SET.issuperset(raw):
        unknown_keys(raw, _YESPO_KEYS, "a Yespo event", errors)

    event_type = raw.get("eventTypeKey")
    if event_type is None:
        errors.append(required("eventTypeKey", "the event's type, e.g. pageViewed"))
    raw_id = raw.get("messageId")
    mid = None if raw_id is None else message_id(raw_id, "messageId", errors)
    given_kv = raw.get("keyValue")
    kv = None if given_kv is None else text(given_kv, "keyValue", errors, max_len=MAX_KEY_VALUE)

    params = raw.get("params")
    if not isinstance(params, list):
        errors.append(
            FieldError(
                "params", f"must be an array of {{name, value}} objects, got {describe(params)}"
            )
        )
        return errors  # without params there is nothing more to check
    type_name = event_type if isinstance(event_type, str) else ""
    parts = split_params(params, type_name, errors)
    contact = normalize_contact(parts.contact, errors, parts.contact_paths, rules.phone_region)
    unpacked = len(errors)
    result = _event(
        event_type=event_type,
        type_path="eventTypeKey",
        mid=mid,
        client_id=raw_id is not None,
        event_time=None,
        contact=contact,
        contact_path="params",
        given_key_value=kv,
        props=parts.props,
        at=Paths("params", parts.overrides),
        extra=parts.extra,
        rules=rules,
        new_id=new_id,
        errors=errors,
    )
    packed_path = f"params.{PACKED.get(type_name)}"
    if isinstance(result, list) and any(e.field == packed_path for e in result[:unpacked]):
        # The packed param could not be parsed and has been reported; the fields it would
        # have held are then "missing" only as a consequence, so they are not reported again.
        inside = packed_path + "."
        result[unpacked:] = [
            e
            for e in result[unpacked:]
            if e.field != packed_path and not e.field.startswith(inside)
        ]
    return result


def normalize_order(
    raw: object, rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError]:
    """One order of an Add-orders body (`{"orders": [...]}`); paths are relative to the order."""
    if not isinstance(raw, dict):
        return [FieldError("", f"an order must be a JSON object, got {describe(raw)}")]
    errors: Errors = []
    order = orders.order_object(
        raw, errors, rules.timezone, rules.check_order_total, rules.phone_region
    )
    if errors:
        return errors
    try:
        body = orjson.dumps(order)
    except TypeError:
        for key, value in order.items():
            if not isinstance(key, str) or json_text(value) is None:
                errors.append(FieldError(str(key), "cannot be written as JSON"))
        return errors or [FieldError("", "cannot be written as JSON")]
    # The contact's key as its events have it: keyValue's rule over the order's contact.
    kv = key_value({f: order.get(f) for f in ORDER_CONTACT_FIELDS}, rules.key_value_order)
    key = f"order:{order['externalOrderId']}"
    after = None if kv is None else f"contact:{kv}"
    return Normalized(new_id(), False, "order", key, "order", None, body, after)
