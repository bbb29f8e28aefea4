"""The params of each event type Yespo knows, built from the inbound `properties`.

Each handler checks one type's properties, appends a `FieldError` for every problem and
returns the params that follow the contact's. Types Yespo does not know are custom events:
their properties pass through, stringified.

Each handler has a fast twin for the common shape (see "Fast paths" below; the cart's and the
order events' are in `orders`): the same params in one pass, without building error paths,
or None when anything is off. At the end, the way back: Yespo's own params taken apart into
the contact and the inbound properties.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import FieldError
from . import carts, orders
from .contact import IDENTIFIER_PARAMS
from .values import (
    MAX_ID,
    Errors,
    Paths,
    currency,
    describe,
    flat_item,
    identifier,
    is_amount,
    is_currency,
    is_scalar,
    is_text,
    json_text,
    need_number,
    param_text,
    pass_through,
    plain_pass_through,
    required,
    scalar_text,
    text,
)

# Yespo's limit on eventTypeKey.
MAX_EVENT_TYPE = 100
# Browsers cap practical URLs near 2 KB; longer ones are tracking junk, not pages.
MAX_LOCATION = 2048

# Characters Yespo refuses in eventTypeKey, plus whitespace and control characters.
FORBIDDEN_IN_TYPE = re.compile(r"[<;'\\/|\"`^?!,>\s\x00-\x1f\x7f-\x9f]")
# An absolute URL or a deep link starts with a scheme: https:, myapp:.
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:", re.ASCII)
_WEB_SCHEMES = ("https:", "http:")  # the usual ones, checked without the regex


# A standard type's params from its properties: (properties, paths, errors, messageId,
# timezone, check_order_total) -> params after the contact's.
Handler = Callable[
    [dict[Any, Any], Paths, Errors, str, datetime.tzinfo, bool], list[tuple[str, str]]
]


def _reserved(props: dict[Any, Any], name: str, at: Paths, errors: Errors, why: str) -> None:
    if props.get(name) is not None:
        errors.append(FieldError(at(name), f"is reserved: {why}"))


def _page_viewed(
    props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    location = props.get("location")
    if location is None:
        errors.append(required(at("location"), "pageViewed needs the page's URL or deep link"))
    else:
        checked = text(location, at("location"), errors, max_len=MAX_LOCATION)
        if checked is not None and not _URL_SCHEME.match(checked):
            errors.append(
                FieldError(
                    at("location"),
                    f"must be an absolute URL or a deep link (https://shop.example/cart, myapp://cart), "
                    f"got {describe(checked)}",
                )
            )
        elif checked is not None:
            page = param_text({"location": checked}, at("location"), errors)
            if page is not None:
                out.append(("page", page))
    _reserved(props, "page", at, errors, "pageViewed writes page from location")
    pass_through(props, _PAGE_FIELDS, at, errors, out)
    return out


_PAGE_FIELDS = frozenset({"location", "page"})
_PRODUCT_FIELDS = frozenset({"productId", "price", "isInStock", "quantity", "currencyCode"})


def _in_stock(value: object) -> int | None:
    if value is True or (type(value) is int and value == 1):
        return 1
    if value is False or (type(value) is int and value == 0):
        return 0
    return None


def _texts(value: object) -> list[str] | None:
    """An extra product property as Yespo keeps it, an array of strings; None if it cannot be."""
    if isinstance(value, list):
        texts = []
        for v in value:
            if type(v) is str:
                texts.append(v)
            elif v is not None and is_scalar(v):
                texts.append(scalar_text(v))
            else:
                return None
        return texts
    return [scalar_text(value)] if is_scalar(value) else None


def _product_viewed(
    props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]]:
    product: dict[str, Any] = {}
    product_id = props.get("productId")
    if product_id is None:
        errors.append(required(at("productId"), "productViewed needs the product's id"))
    else:
        product["productId"] = identifier(product_id, at("productId"), errors, max_len=MAX_ID)
    price = props.get("price")
    if price is None:
        errors.append(required(at("price"), "productViewed needs the product's price"))
    else:
        product["price"] = need_number(price, at("price"), errors)
    in_stock = props.get("isInStock")
    if in_stock is not None:
        product["isInStock"] = flag = _in_stock(in_stock)
        if flag is None:
            errors.append(
                FieldError(
                    at("isInStock"), f"must be true, false, 0 or 1, got {describe(in_stock)}"
                )
            )
    quantity = props.get("quantity")
    if quantity is not None:
        product["quantity"] = need_number(quantity, at("quantity"), errors)
    # Every other property describes the product: Yespo keeps each as an array of strings.
    for name, value in props.items():
        if name in _PRODUCT_FIELDS or value is None:
            continue
        texts = _texts(value)
        if texts is not None:
            product[name] = texts
        else:
            errors.append(
                FieldError(
                    at(name),
                    "must be a string, number, boolean or an array of them (an extra product property "
                    f"becomes an array of strings in Yespo), got {describe(value)}",
                )
            )
    out: list[tuple[str, str]] = []
    product_text = param_text(product, at("productId"), errors)
    if product_text is not None:
        out.append(("product", product_text))
    code = props.get("currencyCode")
    if code is not None:
        checked = currency(code, at("currencyCode"), errors)
        if checked is not None:
            out.append(("currencyCode", checked))
    return out


_CATEGORY_FIELDS = frozenset({"productCategoryId", "category"})


def _category_viewed(
    props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    category_id = props.get("productCategoryId")
    if category_id is None:
        errors.append(
            required(at("productCategoryId"), "productCategoryViewed needs the category's id")
        )
    else:
        checked = identifier(category_id, at("productCategoryId"), errors, max_len=MAX_ID)
        if checked is not None:
            category = param_text({"productCategoryId": checked}, at("productCategoryId"), errors)
            if category is not None:
                out.append(("category", category))
    _reserved(
        props,
        "category",
        at,
        errors,
        "productCategoryViewed writes category from productCategoryId",
    )
    pass_through(props, _CATEGORY_FIELDS, at, errors, out)
    return out


def custom(
    props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in props.items():
        if value is None:
            continue
        if (
            name == "items"
            and isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            # Yespo keeps two levels in items: deeper objects and arrays become strings.
            value = [
                flat_item(v, f"{at(name)}[{i}]", errors, keep_scalar_arrays=False)
                for i, v in enumerate(value)
            ]
        value_text = param_text(value, at(name), errors)
        if value_text is not None:
            out.append((name, value_text))
    return out


def custom_type_problem(event_type: str) -> str | None:
    if not event_type:
        return "must not be empty"
    if len(event_type) > MAX_EVENT_TYPE:
        return f"must be at most {MAX_EVENT_TYPE} characters, got {len(event_type)}"
    bad = FORBIDDEN_IN_TYPE.search(event_type)
    if bad:
        return (
            f"must not contain {bad.group()!r} (at position {bad.start()}): Yespo refuses event types "
            "with any of < ; ' \\ / | \" ` ^ ? ! , > and with spaces or control characters"
        )
    return None


# --- Fast paths ------------------------------------------------------------------------------
#
# Each `_fast_*` takes the common shape of its type's properties in one pass, without building
# error paths, and returns exactly the params its handler above returns for them. On anything
# else it returns None and the caller runs the handler, which takes every shape and says what
# is wrong. Checkers get a scratch list: they return None exactly when they complain.

# (properties, messageId, timezone, check_order_total) -> params after the contact's, or None.
FastHandler = Callable[[dict[Any, Any], str, datetime.tzinfo, bool], list[tuple[str, str]] | None]


def _fast_page_viewed(
    props: dict[Any, Any], mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]] | None:
    location = props.get("location")
    if (
        type(location) is not str
        or len(location) > MAX_LOCATION
        or not (location.startswith(_WEB_SCHEMES) or _URL_SCHEME.match(location))
        or "page" in props
    ):
        return None
    page = json_text({"location": location})
    if page is None:
        return None
    out = [("page", page)]
    return out if len(props) == 1 or plain_pass_through(props, _PAGE_FIELDS, out) else None


def _fast_product_viewed(
    props: dict[Any, Any], mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]] | None:
    get = props.get
    product_id = get("productId")
    price = get("price")
    if not (is_text(product_id, MAX_ID) and is_amount(price)):
        return None
    product: dict[str, Any] = {"productId": product_id, "price": price}
    in_stock = get("isInStock")
    if in_stock is not None:
        product["isInStock"] = flag = _in_stock(in_stock)
        if flag is None:
            return None
    quantity = get("quantity")
    if quantity is not None:
        if not is_amount(quantity):
            return None
        product["quantity"] = quantity
    for name, value in props.items():
        if name in _PRODUCT_FIELDS or value is None:
            continue
        texts = [value] if type(value) is str else _texts(value)
        if texts is None:
            return None
        product[name] = texts
    product_text = json_text(product)
    if product_text is None:
        return None
    out = [("product", product_text)]
    code = get("currencyCode")
    if code is not None:
        if not is_currency(code):
            return None
        out.append(("currencyCode", code.upper()))
    return out


def _fast_category_viewed(
    props: dict[Any, Any], mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]] | None:
    category_id = props.get("productCategoryId")
    if not is_text(category_id, MAX_ID) or props.get("category") is not None:
        return None
    category = json_text({"productCategoryId": category_id})
    if category is None:
        return None
    out = [("category", category)]
    return out if plain_pass_through(props, _CATEGORY_FIELDS, out) else None


def _fast_custom(
    props: dict[Any, Any], mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]] | None:
    out: list[tuple[str, str]] = []
    for name, value in props.items():
        if type(value) is not str:
            if value is None:
                continue
            if (
                name == "items"
                and isinstance(value, list)
                and value
                and all(isinstance(v, dict) for v in value)
            ):
                scratch: Errors = []
                value = [flat_item(v, "", scratch, keep_scalar_arrays=False) for v in value]
                if scratch:
                    return None
            value = param_text(value, "", [])
            if value is None:
                return None
        out.append((name, value))
    return out


def _order_event(event_type: str) -> tuple[FastHandler, Handler]:
    def fast(
        props: dict[Any, Any], mid: str, tz: datetime.tzinfo, check: bool
    ) -> list[tuple[str, str]] | None:
        return orders.fast_event_params(event_type, props, tz, check)

    def handler(
        props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
    ) -> list[tuple[str, str]]:
        return orders.event_params(event_type, props, at, errors, tz, check)

    return fast, handler


# Each type Yespo knows: its fast path and its handler.
HANDLERS: dict[str, tuple[FastHandler, Handler]] = {
    "pageViewed": (_fast_page_viewed, _page_viewed),
    "productViewed": (_fast_product_viewed, _product_viewed),
    "productCategoryViewed": (_fast_category_viewed, _category_viewed),
    "cartUpdated": (carts.fast_cart_params, carts.cart_params),
    **{name: _order_event(name) for name in orders.ORDER_EVENT_TYPES},
}
CUSTOM: tuple[FastHandler, Handler] = (_fast_custom, custom)


# --- Yespo's own form: its params taken apart --------------------------------------------------

# Params whose value Yespo's form carries as a JSON string, per event type.
PACKED = {
    "pageViewed": "page",
    "productViewed": "product",
    "productCategoryViewed": "category",
    "cartUpdated": "products",
    **{name: "items" for name in orders.ORDER_EVENT_TYPES},
}
# What the page and category objects may hold (the product object holds anything).
_PACKED_FIELDS = {"page": ("location",), "category": ("productCategoryId",)}
# Where Yespo's form carries the required fields of the packed params, for error paths.
PACKED_PATHS = {
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


@dataclass(slots=True)
class YespoParams:
    """A Yespo-form params array taken apart into the inbound form, with where each part was."""

    contact: dict[str, object]  # the identifier params, by contact field
    contact_paths: dict[str, str]  # where each identifier was given
    props: dict[str, Any]  # the properties of the inbound form (packed params parsed back)
    overrides: dict[str, str]  # where a property from a packed param is reported
    extra: list[tuple[str, object]]  # params that stay params (beside productViewed's product)


def split_params(params: list[Any], type_name: str, errors: Errors) -> YespoParams:
    """Identifier params become the contact; packed params (`page`, `product`, ...) are parsed
    back; every malformed, repeated or conflicting param is reported."""
    packed = PACKED.get(type_name)
    raw_contact: dict[str, object] = {}
    contact_paths: dict[str, str] = {}
    props: dict[str, Any] = {}
    overrides: dict[str, str] = dict(PACKED_PATHS.get(type_name, {}))
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
            overrides[name] = path
    for name, _ in extra:  # given before `product`, which holds it too
        if name in props:
            errors.append(
                FieldError(f"params.{name}", f"is given twice (also as {overrides[name]})")
            )

    return YespoParams(raw_contact, contact_paths, props, overrides, extra)
