"""Transform stage: an inbound event becomes a Yespo request body, or a precise error.

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
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collector import orders
from collector.contact import (
    CONTACT_FIELDS,
    IDENTIFIER_PARAMS,
    MAX_CONTACT_VALUE,
    contact_params,
    identity_problem,
    key_value,
    normalize_contact,
)
from collector.errors import FieldError
from collector.normalize_types import HANDLERS, Handler, custom, custom_type_problem
from collector.normalize_values import (
    Errors,
    Paths,
    describe,
    epoch_ms,
    json_text,
    message_id,
    param_text,
    required,
    text,
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


@dataclass(frozen=True, slots=True)
class Rules:
    """Normalization settings (built from the app's Settings).

    `key_value_order`: the contact fields tried, in order, for keyValue. `identifying`: an
    event other than an order event must carry one of these (empty: no such check).
    `timezone`: the zone order dates are written in. `check_order_total`: reject orders
    whose items (plus shipping) do not add up to totalCost.
    """

    key_value_order: tuple[str, ...] = CONTACT_FIELDS
    identifying: tuple[str, ...] = ("email", "phone", "contactId", "contactKey", "pushToken")
    timezone: datetime.tzinfo = datetime.UTC
    check_order_total: bool = True


@dataclass(frozen=True, slots=True)
class Normalized:
    """One request body for Yespo, with what the spool needs to order and deduplicate it."""

    message_id: str  # the sender's messageId, or new_id() when it gave none
    client_id: bool  # True when the sender gave the messageId (only those are deduplicated)
    kind: str  # "event" (to Yespo Generate event) or "order" (to Yespo Add orders)
    key: str  # ordering key: "order:<externalOrderId>" for orders, else "contact:<keyValue>"
    event_type: str  # eventTypeKey (or "order" for kind "order")
    event_time: int | None  # the sender's timestamp as epoch milliseconds, if it gave one
    body: bytes  # orjson bytes of the Generate-event body (or of the Add-orders order object)


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
    handler: Handler | None = None
    type_name = ""
    if isinstance(event_type, str):
        type_name = event_type
        handler = HANDLERS.get(event_type)
        if handler is None:
            problem = custom_type_problem(event_type)
            if problem is None:
                handler = custom
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
    if handler is not None and props is not None:
        params = handler(props, at, errors, mid, rules.timezone, rules.check_order_total)
    for name, value in extra:
        value_text = param_text(value, at(name), errors)
        if value_text is not None:
            params.append((name, value_text))
    if errors or contact is None or kv is None:
        return errors or [FieldError(contact_path, "names no contact")]

    body = {
        "eventTypeKey": type_name,
        "keyValue": kv,
        "params": [{"name": n, "value": v} for n, v in (*contact_params(contact), *params)],
    }
    try:
        data = orjson.dumps(body)
    except TypeError:  # a lone surrogate in some text; JSON parsers never produce one
        return [FieldError(at.base, "holds text that is not valid Unicode")]
    if len(data) > MAX_BODY_BYTES:
        return [
            FieldError(
                at.base,
                f"make a Yespo event of {len(data):,} bytes; Yespo accepts at most {MAX_BODY_BYTES:,} "
                "bytes (20 KB) per event: send less",
            )
        ]
    if is_order:
        order_id = next(v for n, v in params if n == "externalOrderId")
        key = f"order:{order_id}"
    else:
        key = f"contact:{kv}"
    return Normalized(mid, client_id, "event", key, type_name, event_time, data)


def _unknown_keys(raw: dict[Any, Any], allowed: tuple[str, ...], what: str, errors: Errors) -> None:
    for key in raw:
        if key not in allowed:
            name = str(key)
            # A hint for typos only: short names, so a huge key costs nothing.
            close = difflib.get_close_matches(name, allowed, n=1) if len(name) <= 40 else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(
                FieldError(name, f"is not a field of {what}{hint}; allowed: {', '.join(allowed)}")
            )


# --- the public entry points ---------------------------------------------------------------


def normalize_event(
    raw: object, rules: Rules, new_id: Callable[[], str]
) -> Normalized | list[FieldError]:
    """An inbound event (`type`, `contact`, `properties`, ...) as a Yespo Generate-event body."""
    if not isinstance(raw, dict):
        return [FieldError("", f"an event must be a JSON object, got {describe(raw)}")]
    errors: Errors = []
    if not _EVENT_KEY_SET.issuperset(raw):
        _unknown_keys(raw, _EVENT_KEYS, "an event", errors)

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
    if anonymous_id is not None and not (
        isinstance(anonymous_id, str) and len(anonymous_id) <= MAX_ANONYMOUS_ID
    ):
        errors.append(
            FieldError("anonymousId", f"must be a string of at most {MAX_ANONYMOUS_ID} characters")
        )

    raw_contact = raw.get("contact", {})
    contact: dict[str, str | None] | None = None
    if isinstance(raw_contact, dict):
        before = len(errors)
        contact = normalize_contact(raw_contact, errors)
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


# Params whose value Yespo's form carries as a JSON string, per event type.
_PACKED = {
    "pageViewed": "page",
    "productViewed": "product",
    "productCategoryViewed": "category",
    "cartUpdated": "products",
    **{name: "items" for name in orders.ORDER_EVENT_TYPES},
}
# What the page and category objects may hold (the product object holds anything).
_PACKED_FIELDS = {"page": ("location",), "category": ("productCategoryId",)}
# Where Yespo's form carries the required fields of the packed params, for error paths.
_PACKED_PATHS = {
    "pageViewed": {"location": "params.page.location"},
    "productViewed": {
        name: f"params.product.{name}" for name in ("productId", "price", "isInStock", "quantity")
    },
    "productCategoryViewed": {"productCategoryId": "params.category.productCategoryId"},
}


def _unpack(
    name: str,
    value: object,
    path: str,
    props: dict[str, Any],
    overrides: dict[str, str],
    errors: Errors,
) -> None:
    """Map a packed param (`page`, `product`, ...) back to the inbound properties it came from."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            errors.append(
                FieldError(path, f"must be a JSON string, but it is not valid JSON: {exc}")
            )
            return
    if name in ("items", "products"):
        props[name] = parsed
        return
    if not isinstance(parsed, dict):
        errors.append(FieldError(path, f"must be a JSON object, got {describe(parsed)}"))
        return
    allowed = _PACKED_FIELDS.get(name)
    for key, field_value in parsed.items():
        if allowed is not None and key not in allowed:
            errors.append(
                FieldError(
                    f"{path}.{key}", f"is not part of {name}, which holds only {', '.join(allowed)}"
                )
            )
        elif key in props:
            errors.append(
                FieldError(
                    f"{path}.{key}", f"is given twice (also as {overrides.get(key, 'a param')})"
                )
            )
        else:
            props[key] = field_value
            overrides[key] = f"{path}.{key}"


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
        _unknown_keys(raw, _YESPO_KEYS, "a Yespo event", errors)

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
    packed = _PACKED.get(type_name)
    raw_contact: dict[str, object] = {}
    contact_paths: dict[str, str] = {}
    props: dict[str, Any] = {}
    overrides: dict[str, str] = dict(_PACKED_PATHS.get(type_name, {}))
    extra: list[tuple[str, object]] = []
    seen: set[str] = set()
    for i, param in enumerate(params):
        if not isinstance(param, dict):
            errors.append(
                FieldError(
                    f"params[{i}]", f"must be a {{name, value}} object, got {describe(param)}"
                )
            )
            continue
        name = param.get("name")
        if not isinstance(name, str) or not name:
            errors.append(
                FieldError(f"params[{i}].name", f"must be a non-empty string, got {describe(name)}")
            )
            continue
        path = f"params.{name}"
        if "value" not in param:
            errors.append(FieldError(path, "has no value: a param is {name, value}"))
            continue
        if len(param) != 2:
            wrong = ", ".join(str(k) for k in param if k not in ("name", "value"))
            errors.append(
                FieldError(path, f"has unknown keys ({wrong}): a param is {{name, value}}")
            )
        if name in seen:
            errors.append(FieldError(path, "is given twice"))
            continue
        seen.add(name)
        value = param["value"]
        field = IDENTIFIER_PARAMS.get(name.lower())
        if field is not None:
            if field in raw_contact:
                errors.append(
                    FieldError(
                        path, f"gives the contact's {field} again (also in {contact_paths[field]})"
                    )
                )
                continue
            raw_contact[field] = value
            contact_paths[field] = path
        elif name == packed:
            _unpack(name, value, path, props, overrides, errors)
        elif name in props:
            errors.append(
                FieldError(path, f"is given twice (also as {overrides.get(name, 'a param')})")
            )
        elif packed == "product" and name != "currencyCode":
            # Beside `product`, productViewed's params stay params (the inbound form would
            # move them into the product).
            extra.append((name, value))
        else:
            props[name] = value

    contact = normalize_contact(raw_contact, errors, contact_paths)
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
        props=props,
        at=Paths("params", overrides),
        extra=extra,
        rules=rules,
        new_id=new_id,
        errors=errors,
    )
    packed_path = f"params.{packed}"
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
    order = orders.order_object(raw, errors, rules.timezone, rules.check_order_total)
    if errors:
        return errors
    try:
        body = orjson.dumps(order)
    except TypeError:
        for key, value in order.items():
            if not isinstance(key, str) or json_text(value) is None:
                errors.append(FieldError(str(key), "cannot be written as JSON"))
        return errors or [FieldError("", "cannot be written as JSON")]
    return Normalized(
        new_id(), False, "order", f"order:{order['externalOrderId']}", "order", None, body
    )
