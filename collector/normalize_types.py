"""The params of each event type Yespo knows, built from the inbound `properties`.

Each handler checks one type's properties, appends a `FieldError` for every problem and
returns the params that follow the contact's. Types Yespo does not know are custom events:
their properties pass through, stringified.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable
from typing import Any

from collector import orders
from collector.errors import FieldError
from collector.normalize_values import (
    MAX_ID,
    Errors,
    Paths,
    currency,
    describe,
    flat_item,
    identifier,
    is_amount,
    is_scalar,
    is_text,
    json_text,
    need_number,
    param_text,
    pass_through,
    required,
    scalar_text,
    text,
)

# Yespo's limit on eventTypeKey.
MAX_EVENT_TYPE = 100
# Browsers cap practical URLs near 2 KB; longer ones are tracking junk, not pages.
MAX_LOCATION = 2048
# recycleStateId: Latin letters, digits and '-' (the guide's example is a UUID).
MAX_RECYCLE_STATE_ID = 100
# Length of a derived recycleStateId (hex digits of a SHA-1).
_DERIVED_RECYCLE_LEN = 32

# Characters Yespo refuses in eventTypeKey, plus whitespace and control characters.
_FORBIDDEN_IN_TYPE = re.compile(r"[<;'\\/|\"`^?!,>\s\x00-\x1f\x7f-\x9f]")
_RECYCLE_STATE_ID = re.compile(r"[A-Za-z0-9-]+", re.ASCII)
# An absolute URL or a deep link starts with a scheme: https:, myapp:.
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:", re.ASCII)


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
    if (
        type(location) is str
        and len(location) <= MAX_LOCATION
        and _URL_SCHEME.match(location)
        and "page" not in props
    ):
        # The common case, without building error paths; the checks below say what is wrong.
        page = json_text({"location": location})
        if page is not None:
            out.append(("page", page))
            if len(props) > 1:
                pass_through(props, _PAGE_FIELDS, at, errors, out)
            return out
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


def _in_stock(value: object, at: Paths, errors: Errors) -> int | None:
    if value is True or (type(value) is int and value == 1):
        return 1
    if value is False or (type(value) is int and value == 0):
        return 0
    errors.append(
        FieldError(at("isInStock"), f"must be true, false, 0 or 1, got {describe(value)}")
    )
    return None


def _product_viewed(
    props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]]:
    product: dict[str, Any] = {}
    # Each field: the common shape first (no error path built), then the full check.
    product_id = props.get("productId")
    if is_text(product_id, MAX_ID):
        product["productId"] = product_id
    elif product_id is None:
        errors.append(required(at("productId"), "productViewed needs the product's id"))
    else:
        product["productId"] = identifier(product_id, at("productId"), errors, max_len=MAX_ID)
    price = props.get("price")
    if is_amount(price):
        product["price"] = price
    elif price is None:
        errors.append(required(at("price"), "productViewed needs the product's price"))
    else:
        product["price"] = need_number(price, at("price"), errors)
    in_stock = props.get("isInStock")
    if in_stock is not None:
        product["isInStock"] = _in_stock(in_stock, at, errors)
    quantity = props.get("quantity")
    if is_amount(quantity):
        product["quantity"] = quantity
    elif quantity is not None:
        product["quantity"] = need_number(quantity, at("quantity"), errors)
    # Every other property describes the product: Yespo keeps each as an array of strings.
    for name, value in props.items():
        if name in _PRODUCT_FIELDS or value is None:
            continue
        if isinstance(value, list) and all(is_scalar(v) and v is not None for v in value):
            product[name] = [scalar_text(v) for v in value]
        elif is_scalar(value):
            product[name] = [scalar_text(value)]
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


_CART_FIELDS = frozenset({"products", "currencyCode", "recycleStateId"})


def _cart_products(value: object, path: str, errors: Errors) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        errors.append(
            FieldError(
                path,
                f"must be an array of products (empty for an emptied cart), got {describe(value)}",
            )
        )
        return None
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        if not isinstance(item, dict):
            errors.append(FieldError(item_path, f"must be an object, got {describe(item)}"))
            continue
        product = flat_item(item, item_path, errors, keep_scalar_arrays=True)
        for field in ("productId", "quantity", "price"):
            if field not in product:
                errors.append(
                    required(
                        f"{item_path}.{field}",
                        "every cart product needs productId, quantity and price",
                    )
                )
        if "productId" in product:
            product["productId"] = identifier(
                item["productId"], f"{item_path}.productId", errors, max_len=MAX_ID
            )
        if "quantity" in product:
            product["quantity"] = need_number(
                item["quantity"], f"{item_path}.quantity", errors, positive=True
            )
        if "price" in product:
            product["price"] = need_number(item["price"], f"{item_path}.price", errors)
        out.append(product)
    return out


def _cart_updated(
    props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    products = props.get("products")
    if products is None:
        errors.append(
            required(
                at("products"),
                "cartUpdated sends the whole cart (an empty array for an emptied cart)",
            )
        )
    else:
        checked = _cart_products(products, at("products"), errors)
        if checked is not None:
            products_text = param_text(checked, at("products"), errors)
            if products_text is not None:
                out.append(("products", products_text))
    code = props.get("currencyCode")
    if code is not None:
        checked_code = currency(code, at("currencyCode"), errors)
        if checked_code is not None:
            out.append(("currencyCode", checked_code))
    recycle = props.get("recycleStateId")
    if recycle is None:
        # Derived from the messageId, so a retried event keeps its cart state id.
        out.append(
            ("recycleStateId", hashlib.sha1(mid.encode()).hexdigest()[:_DERIVED_RECYCLE_LEN])
        )
    elif (
        isinstance(recycle, str)
        and len(recycle) <= MAX_RECYCLE_STATE_ID
        and _RECYCLE_STATE_ID.fullmatch(recycle)
    ):
        out.append(("recycleStateId", recycle))
    else:
        errors.append(
            FieldError(
                at("recycleStateId"),
                f"must be 1 to {MAX_RECYCLE_STATE_ID} Latin letters, digits and '-' (a UUID fits), "
                f"got {describe(recycle)}",
            )
        )
    pass_through(props, _CART_FIELDS, at, errors, out)
    return out


def _order_event(event_type: str) -> Handler:
    def handler(
        props: dict[Any, Any], at: Paths, errors: Errors, mid: str, tz: datetime.tzinfo, check: bool
    ) -> list[tuple[str, str]]:
        return orders.event_params(event_type, props, at, errors, tz, check)

    return handler


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


HANDLERS: dict[str, Handler] = {
    "pageViewed": _page_viewed,
    "productViewed": _product_viewed,
    "productCategoryViewed": _category_viewed,
    "cartUpdated": _cart_updated,
    **{name: _order_event(name) for name in orders.ORDER_EVENT_TYPES},
}


def custom_type_problem(event_type: str) -> str | None:
    if not event_type:
        return "must not be empty"
    if len(event_type) > MAX_EVENT_TYPE:
        return f"must be at most {MAX_EVENT_TYPE} characters, got {len(event_type)}"
    bad = _FORBIDDEN_IN_TYPE.search(event_type)
    if bad:
        return (
            f"must not contain {bad.group()!r} (at position {bad.start()}): Yespo refuses event types "
            "with any of < ; ' \\ / | \" ` ^ ? ! , > and with spaces or control characters"
        )
    return None
