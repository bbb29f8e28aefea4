"""Order rules (seeds 000-003), shared by order events and Add-orders objects; and carts.

Yespo silently ignores an order that misses a required field or whose items do not add up,
so these checks are the last place where the sender can still be told. Carts (cartUpdated)
are checked here too: like an order's items, a cart's products are flattened to the two
levels Yespo keeps, each with its id, quantity and price.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from ..errors import FieldError
from .contact import contact_value, email, phone
from .values import (
    MAX_ID,
    Errors,
    Number,
    currency,
    describe,
    flat_item,
    identifier,
    is_amount,
    is_text,
    json_text,
    local_datetime,
    need_number,
    number,
    number_text,
    param_text,
    pass_through,
    plain_pass_through,
    required,
    scalar_text,
    text,
)

ORDER_EVENT_TYPES = frozenset({"orderCreated", "orderUpdated", "orderDelivered", "orderCancelled"})
STATUSES = ("INITIALIZED", "IN_PROGRESS", "DELIVERED", "CANCELLED", "ABANDONED_SHOPPING_CART")
_STATUS_SET = frozenset(STATUSES)
# Yespo's Add orders takes at most this many orders per request; the compatible endpoint
# keeps the same limit, so a backend that works here also works against Yespo.
MAX_ORDERS_PER_REQUEST = 1000
# externalOrderId is the order's identity in Yespo; 100 characters is far above any shop's ids.
MAX_ORDER_ID = 100
# Names and URLs of items: a URL longer than this is not one a shop links to.
MAX_ITEM_TEXT = 2048
# How far the items' sum may be from totalCost: one cent, for rounding in the sender's sums.
TOTAL_TOLERANCE = 0.01
_ITEM_FIELDS = ("externalItemId", "name", "quantity", "cost", "url", "imageUrl")
# Order-event properties with their own rules; every other property is a custom field.
_EVENT_FIELDS = frozenset({"externalOrderId", "totalCost", "status", "date", "currency", "items"})


def status(value: object, path: str, errors: Errors) -> str | None:
    """One of Yespo's order statuses, case ignored, written upper-case."""
    if isinstance(value, str) and value.upper() in _STATUS_SET:
        return value.upper()
    errors.append(FieldError(path, f"must be one of {', '.join(STATUSES)}, got {describe(value)}"))
    return None


def _plain_items(value: object, flatten: bool) -> tuple[list[dict[str, Any]], float] | None:
    """`items` for items already in shape, the common case (no error paths built); else None.

    An item of the six fields only is already as Yespo keeps it, and is used as it is: the
    callers only serialize what `items` returns.
    """
    if type(value) is not list:
        return None
    out: list[dict[str, Any]] = []
    total = 0.0
    scratch: Errors = []
    for item in value:
        if type(item) is not dict:
            return None
        get = item.get
        item_id = get("externalItemId")
        name = get("name")
        url = get("url")
        image_url = get("imageUrl")
        quantity = get("quantity")
        cost = get("cost")
        # is_text, inlined: this runs for every item of every order.
        if not (
            type(item_id) is str
            and 0 < len(item_id) <= MAX_ID
            and not item_id.isspace()
            and type(name) is str
            and 0 < len(name) <= MAX_ITEM_TEXT
            and not name.isspace()
            and type(url) is str
            and 0 < len(url) <= MAX_ITEM_TEXT
            and not url.isspace()
            and type(image_url) is str
            and 0 < len(image_url) <= MAX_ITEM_TEXT
            and not image_url.isspace()
            and is_amount(quantity, positive=True)
            and is_amount(cost)
        ):
            return None
        total += quantity * cost
        if len(item) == len(_ITEM_FIELDS):
            out.append(item)
        elif flatten:
            out.append(flat_item(item, "", scratch, keep_scalar_arrays=False))
        else:
            out.append({k: v for k, v in item.items() if v is not None})
    return None if scratch else (out, total)


def items(
    value: object, path: str, errors: Errors, *, flatten: bool
) -> tuple[list[dict[str, Any]] | None, float]:
    """An order's items, checked; and the sum of quantity * cost.

    With `flatten` (order events) objects and arrays inside an item become JSON strings,
    the two levels Yespo keeps; without (Add orders) items keep their shape.
    Returns (None, 0) when any item is wrong.
    """
    plain = _plain_items(value, flatten)
    return _checked_items(value, path, errors, flatten) if plain is None else plain


def _checked_items(
    value: object, path: str, errors: Errors, flatten: bool
) -> tuple[list[dict[str, Any]] | None, float]:
    """`items` with every check spelled out: it reports every problem it finds."""
    if not isinstance(value, list):
        errors.append(FieldError(path, f"must be an array of items, got {describe(value)}"))
        return None, 0.0
    before = len(errors)
    out: list[dict[str, Any]] = []
    total = 0.0
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            errors.append(FieldError(f"{path}[{i}]", f"must be an object, got {describe(item)}"))
            continue
        item_path = f"{path}[{i}]"
        for field in _ITEM_FIELDS:
            if item.get(field) is None:
                errors.append(
                    required(
                        f"{item_path}.{field}",
                        "every item needs externalItemId, name, quantity, cost, url and imageUrl",
                    )
                )
        normalized = (
            flat_item(item, item_path, errors, keep_scalar_arrays=False)
            if flatten
            else {k: v for k, v in item.items() if v is not None}
        )
        if "externalItemId" in normalized:
            normalized["externalItemId"] = identifier(
                item["externalItemId"], f"{item_path}.externalItemId", errors, max_len=MAX_ID
            )
        for field in ("name", "url", "imageUrl"):
            if field in normalized:
                text(item[field], f"{item_path}.{field}", errors, max_len=MAX_ITEM_TEXT)
        quantity = cost = None
        if "quantity" in normalized:
            quantity = normalized["quantity"] = need_number(
                item["quantity"], f"{item_path}.quantity", errors, positive=True
            )
        if "cost" in normalized:
            cost = normalized["cost"] = need_number(item["cost"], f"{item_path}.cost", errors)
        if quantity is not None and cost is not None:
            total += quantity * cost
        out.append(normalized)
    if len(errors) > before:
        return None, 0.0
    return out, total


def total_problem(items_sum: float, total_cost: object, shipping: object) -> str | None:
    """Yespo's rule: the items (discounts already in their cost) plus shipping make totalCost."""
    total = number(total_cost)
    if total is None:
        return None
    shipping_cost: Number = number(shipping) or 0
    if abs(items_sum + shipping_cost - total) <= TOTAL_TOLERANCE + 1e-9:
        return None
    written = total_cost if isinstance(total_cost, str) else number_text(total)
    return (
        f"items add up to {number_text(items_sum)} (+ shipping {number_text(shipping_cost)}), "
        f"totalCost is {written}; Yespo needs them equal (put discounts into each item's cost)"
    )


def event_params(
    event_type: str,
    props: dict[Any, Any],
    at: Callable[[str], str],
    errors: Errors,
    tz: datetime.tzinfo,
    check: bool,
) -> list[tuple[str, str]]:
    """The params of an order event (orderCreated, orderUpdated, orderDelivered, orderCancelled).

    orderCreated needs externalOrderId, totalCost, status and date; the others need only
    externalOrderId and check whatever else is given the same way.
    """
    out: list[tuple[str, str]] = []
    created = event_type == "orderCreated"
    order_id = props.get("externalOrderId")
    if order_id is None:
        errors.append(
            required(at("externalOrderId"), f"{event_type} names its order by externalOrderId")
        )
    else:
        checked = identifier(order_id, at("externalOrderId"), errors, max_len=MAX_ORDER_ID)
        if checked is not None:
            out.append(("externalOrderId", checked))

    total_cost = props.get("totalCost")
    if total_cost is not None and need_number(total_cost, at("totalCost"), errors) is not None:
        # Kept as the sender wrote it: "258.0" stays "258.0", 258.0 becomes "258.0".
        out.append(("totalCost", scalar_text(total_cost)))
    elif total_cost is None and created:
        errors.append(required(at("totalCost"), "orderCreated needs the order's total"))

    order_status = props.get("status")
    if order_status is not None:
        checked = status(order_status, at("status"), errors)
        if checked is not None:
            out.append(("status", checked))
    elif created:
        errors.append(required(at("status"), f"orderCreated needs one of {', '.join(STATUSES)}"))

    date = props.get("date")
    if date is not None:
        checked = local_datetime(date, at("date"), errors, tz)
        if checked is not None:
            out.append(("date", checked))
    elif created:
        errors.append(required(at("date"), "orderCreated needs the order's date"))

    order_currency = props.get("currency")
    if order_currency is not None:
        checked = currency(order_currency, at("currency"), errors)
        if checked is not None:
            out.append(("currency", checked))

    order_items = props.get("items")
    if order_items is not None:
        items_path = at("items")
        checked_items, items_sum = items(order_items, items_path, errors, flatten=True)
        if checked_items is not None:
            items_text = param_text(checked_items, items_path, errors)
            if items_text is not None:
                out.append(("items", items_text))
            if check and total_cost is not None:
                problem = total_problem(items_sum, total_cost, props.get("shipping"))
                if problem is not None:
                    errors.append(FieldError(at("totalCost"), problem))

    pass_through(props, _EVENT_FIELDS, at, errors, out)
    return out


def fast_event_params(
    event_type: str, props: dict[Any, Any], tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]] | None:
    """`event_params` for properties in the common shape (no error paths built); else None.

    Checkers get a scratch list: they return None exactly when they complain.
    """
    created = event_type == "orderCreated"
    get = props.get
    order_id = get("externalOrderId")
    if not is_text(order_id, MAX_ORDER_ID):
        return None
    out = [("externalOrderId", order_id)]
    total_cost = get("totalCost")
    if total_cost is not None:
        # A numeric string is common here ("258.0" in Yespo's own examples).
        if not is_amount(total_cost) and need_number(total_cost, "", []) is None:
            return None
        out.append(("totalCost", scalar_text(total_cost)))
    elif created:
        return None
    order_status = get("status")
    if order_status is not None:
        if type(order_status) is not str or order_status not in _STATUS_SET:
            order_status = status(order_status, "", [])
            if order_status is None:
                return None
        out.append(("status", order_status))
    elif created:
        return None
    date = get("date")
    if date is not None:
        date = local_datetime(date, "", [], tz)
        if date is None:
            return None
        out.append(("date", date))
    elif created:
        return None
    order_currency = get("currency")
    if order_currency is not None:
        order_currency = currency(order_currency, "", [])
        if order_currency is None:
            return None
        out.append(("currency", order_currency))
    order_items = get("items")
    if order_items is not None:
        checked_items, items_sum = items(order_items, "", [], flatten=True)
        items_text = None if checked_items is None else json_text(checked_items)
        if items_text is None:
            return None
        out.append(("items", items_text))
        if (
            check
            and total_cost is not None
            and total_problem(items_sum, total_cost, get("shipping")) is not None
        ):
            return None
    return out if plain_pass_through(props, _EVENT_FIELDS, out) else None


_ORDER_FIELDS = ("externalOrderId", "externalCustomerId", "totalCost", "status", "date")


def order_object(
    raw: dict[Any, Any],
    errors: Errors,
    tz: datetime.tzinfo,
    check: bool,
    phone_region: str | None = None,
) -> dict[str, Any]:
    """One order of an Add-orders body, checked; normalized values, same keys, nulls left out."""
    out: dict[str, Any] = {k: v for k, v in raw.items() if v is not None}
    for field in _ORDER_FIELDS:
        if field not in out:
            errors.append(
                required(
                    field,
                    "an order needs externalOrderId, externalCustomerId, totalCost, status and date",
                )
            )
    if "externalOrderId" in out:
        out["externalOrderId"] = identifier(
            out["externalOrderId"], "externalOrderId", errors, max_len=MAX_ORDER_ID
        )
    if "externalCustomerId" in out:
        out["externalCustomerId"] = contact_value(
            "externalCustomerId", out["externalCustomerId"], "externalCustomerId", errors
        )
    if "totalCost" in out:
        out["totalCost"] = need_number(out["totalCost"], "totalCost", errors)
    if "status" in out:
        out["status"] = status(out["status"], "status", errors)
    if "date" in out:
        out["date"] = local_datetime(out["date"], "date", errors, tz)
    if "email" not in out and "phone" not in out:
        errors.append(
            required(
                "email",
                "an order needs email or phone: Yespo matches the order to a contact by them",
            )
        )
    if "email" in out:
        out["email"] = email(out["email"], "email", errors)
    if "phone" in out:
        out["phone"] = phone(out["phone"], "phone", errors, phone_region)
    if "items" in out:
        checked_items, items_sum = items(out["items"], "items", errors, flatten=False)
        out["items"] = checked_items
        if checked_items is not None and check and out.get("totalCost") is not None:
            problem = total_problem(items_sum, raw["totalCost"], out.get("shipping"))
            if problem is not None:
                errors.append(FieldError("totalCost", problem))
    return out
