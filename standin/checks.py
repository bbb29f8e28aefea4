"""Yespo's checks on Generate-event bodies and Add-orders orders, as the stand-in applies them.

Pure functions: each returns None for a good value or one message naming the first problem,
the way Yespo's 400 ``{"message": ...}`` and ``failedOrders[].message`` do. They follow
Yespo's API documentation, taking the stricter reading where Yespo's guides differ, so
that anything the stand-in accepts Yespo accepts too.

`ignored_reason` is the other half: events Yespo answers 200 and then drops without a
word (no contact, an order it cannot save). The stand-in records those apart, so that a
test reading what "Yespo" kept does not count them.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import orjson

# Generate event: Yespo's published limits.
MAX_EVENT_BODY = 20_000  # bytes of one request body ("at most 20 KB", read as 20,000)
MAX_EVENT_TYPE_KEY = 100
MAX_KEY_VALUE = 300
FORBIDDEN_IN_EVENT_TYPE_KEY = frozenset("<;'\\/|\"`^?!,>")
# Add orders: "You can transfer up to 1000 orders in one request."
MAX_ORDERS = 1000
ORDER_STATUSES = frozenset(
    {"INITIALIZED", "IN_PROGRESS", "DELIVERED", "CANCELLED", "ABANDONED_SHOPPING_CART"}
)
ORDER_REQUIRED = ("externalOrderId", "externalCustomerId", "totalCost", "status", "date")
# Generate event: what orderCreated must fill (its contact aside), or Yespo ignores it.
ORDER_EVENT_REQUIRED = ("externalOrderId", "totalCost", "status", "date")
ITEM_REQUIRED = ("externalItemId", "name", "quantity", "cost", "url", "imageUrl")

# The param names Yespo reads as an event's contact, case ignored: its default list (an
# account can configure names of its own, which the stand-in does not model).
CONTACT_PARAMS = (
    *("ContactId", "Contact_id", "Email", "EmailAddress", "UserEmail", "ContactEmail"),
    *("Phone", "SMS", "PhoneNumber", "PushToken", "ContactKey", "Contact_key"),
)
# An order event's contact, named as the order rules name it (seeds 000-003).
ORDER_CONTACT_PARAMS = ("externalCustomerId", "email", "phone")
ORDER_EVENT_TYPES = frozenset({"orderCreated", "orderUpdated", "orderDelivered", "orderCancelled"})
# The order events that create the order when Yespo does not have it.
CREATING_ORDER_EVENTS = frozenset({"orderCreated", "orderUpdated"})

_EVENT_KEYS = frozenset({"eventTypeKey", "keyValue", "params"})
_CONTACT_NAMES = frozenset(name.lower() for name in CONTACT_PARAMS)
_PARAM_KEYS = frozenset({"name", "value"})
# YYYY-MM-ddTHH:mm:ss, "ISO 8601, no zone" (the contract's order rules, seeds 000-003).
# Seed 003's Add-orders example carries a zone, but seed 000 gives the format without one,
# and the stricter reading is the one anything Yespo accepts passes.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def kind(value: object) -> str:
    """The JSON type of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def event_problem(body: Any) -> str | None:
    """What is wrong with a parsed Generate-event body, or None.

    Exactly ``{"eventTypeKey": str, "keyValue": str, "params": [{"name", "value"}]}``
    with every value a string: the collector stringifies numbers, objects and arrays.
    """
    if type(body) is not dict:
        return f"the body must be a JSON object, got {kind(body)}"
    if body.keys() != _EVENT_KEYS:
        missing = sorted(_EVENT_KEYS - body.keys())
        extra = sorted(body.keys() - _EVENT_KEYS)
        return f"the body must have exactly eventTypeKey, keyValue, params (missing {missing}, unexpected {extra})"
    key = body["eventTypeKey"]
    if type(key) is not str or not key:
        return f"eventTypeKey must be a non-empty string, got {kind(key)}"
    if len(key) > MAX_EVENT_TYPE_KEY:
        return f"eventTypeKey is {len(key)} characters; at most {MAX_EVENT_TYPE_KEY}"
    if not FORBIDDEN_IN_EVENT_TYPE_KEY.isdisjoint(key):
        found = "".join(sorted(FORBIDDEN_IN_EVENT_TYPE_KEY.intersection(key)))
        return f"eventTypeKey contains forbidden characters: {found}"
    key_value = body["keyValue"]
    if type(key_value) is not str or not key_value:
        return f"keyValue must be a non-empty string, got {kind(key_value)}"
    if len(key_value) > MAX_KEY_VALUE:
        return f"keyValue is {len(key_value)} characters; at most {MAX_KEY_VALUE}"
    params = body["params"]
    if type(params) is not list:
        return f"params must be an array, got {kind(params)}"
    for i, param in enumerate(params):
        if type(param) is not dict or param.keys() != _PARAM_KEYS:
            return f"params[{i}] must be an object of exactly name and value"
        name = param["name"]
        if type(name) is not str or not name:
            return f"params[{i}].name must be a non-empty string, got {kind(name)}"
        if type(param["value"]) is not str:
            return f"params[{i}].value ({name}) must be a string, got {kind(param['value'])}"
    return None


def ignored_reason(body: dict[str, Any], has_order: Callable[[str], bool]) -> str | None:
    """Why Yespo answers 200 to this event and then ignores it, or None if Yespo keeps it.

    `body` is one that `event_problem` passed; `has_order(externalOrderId)` says whether
    Yespo has that order. A param with a blank value fills nothing.
    """
    params: dict[str, str] = {}
    for param in body["params"]:
        if param["value"].strip():
            params.setdefault(param["name"], param["value"])
    event_type = body["eventTypeKey"]
    if event_type in ORDER_EVENT_TYPES:
        if params.keys().isdisjoint(ORDER_CONTACT_PARAMS):
            return (
                f"an order event needs its contact in {_one_of(ORDER_CONTACT_PARAMS)}; "
                f"params given: {_names(params)}"
            )
        return _order_event_ignored(event_type, params, has_order)
    if _CONTACT_NAMES.isdisjoint(name.lower() for name in params):
        return (
            f"names no contact: Yespo looks for {_one_of(CONTACT_PARAMS)} (case ignored); "
            f"params given: {_names(params)}"
        )
    return None


def _order_event_ignored(
    event_type: str, params: dict[str, str], has_order: Callable[[str], bool]
) -> str | None:
    """Why Yespo ignores an order event that names its contact, or None."""
    order_id = params.get("externalOrderId")
    if order_id is None:
        return f"{event_type} without required param(s): externalOrderId"
    known = has_order(order_id)
    if not known and event_type not in CREATING_ORDER_EVENTS:
        return f"{event_type} for order {order_id!r}, which Yespo does not have"
    # orderUpdated creates an order Yespo does not have, and then orderCreated's rules apply.
    if not known or event_type == "orderCreated":
        missing = [name for name in ORDER_EVENT_REQUIRED if name not in params]
        if missing:
            creates = "" if event_type == "orderCreated" else f" (order {order_id!r} is new)"
            return f"{event_type}{creates} without required param(s): {', '.join(missing)}"
    status = params.get("status")
    if status is not None and status not in ORDER_STATUSES:
        return f"status must be one of {', '.join(sorted(ORDER_STATUSES))}, got {status!r}"
    date = params.get("date")
    if date is not None and not _is_date(date):
        return f"date must be YYYY-MM-ddTHH:mm:ss, got {date!r}"
    items = params.get("items")
    if items is None:
        return None
    try:
        parsed = orjson.loads(items)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        return "items must be a JSON string of an array of items"
    for i, item in enumerate(parsed):
        if not isinstance(item, dict):
            return f"items[{i}] must be an object, got {kind(item)}"
        missing = [name for name in ITEM_REQUIRED if item.get(name) in (None, "")]
        if missing:
            return f"items[{i}] without required field(s): {', '.join(missing)}"
    return None


def created_order(body: dict[str, Any]) -> str | None:
    """The externalOrderId of a kept orderCreated or orderUpdated: Yespo now has that order."""
    if body["eventTypeKey"] not in CREATING_ORDER_EVENTS:
        return None
    for param in body["params"]:
        if param["name"] == "externalOrderId" and param["value"].strip():  # as ignored_reason
            order_id: str = param["value"]
            return order_id
    return None


def order_problem(order: Any) -> str | None:
    """What is wrong with one order of an Add-orders request, or None."""
    if not isinstance(order, dict):
        return f"an order must be an object, got {kind(order)}"
    missing = [name for name in ORDER_REQUIRED if order.get(name) in (None, "")]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    if not order.get("email") and not order.get("phone"):
        return "an order needs email or phone"
    for name in ("externalOrderId", "externalCustomerId"):
        if not _is_text_or_int(order[name]):
            return f"{name} must be a string or an integer, got {kind(order[name])}"
    if not _is_number(order["totalCost"]):
        return f"totalCost must be a number, got {kind(order['totalCost'])}"
    if not isinstance(order["status"], str) or order["status"] not in ORDER_STATUSES:
        return f"status must be one of {', '.join(sorted(ORDER_STATUSES))}"
    if not _is_date(order["date"]):
        return f"date must be YYYY-MM-ddTHH:mm:ss, got {order['date']!r}"
    items = order.get("items")
    if items is None:
        return None
    if not isinstance(items, list):
        return f"items must be an array, got {kind(items)}"
    for i, item in enumerate(items):
        problem = _item_problem(item)
        if problem is not None:
            return f"items[{i}]: {problem}"
    return None


def _item_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"an item must be an object, got {kind(item)}"
    missing = [name for name in ITEM_REQUIRED if item.get(name) in (None, "")]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    for name in ("quantity", "cost"):
        if not _is_number(item[name]):
            return f"{name} must be a number, got {kind(item[name])}"
    for name in ("name", "url", "imageUrl"):
        if not isinstance(item[name], str):
            return f"{name} must be a string, got {kind(item[name])}"
    if not _is_text_or_int(item["externalItemId"]):
        return f"externalItemId must be a string or an integer, got {kind(item['externalItemId'])}"
    return None


def _one_of(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _names(params: dict[str, str]) -> str:
    return ", ".join(params) or "none"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text_or_int(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:  # a well-shaped but impossible date, e.g. month 13
        return False
    return True
