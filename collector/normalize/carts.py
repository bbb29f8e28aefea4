"""cartUpdated: the whole cart as Yespo's products param, with its recycleStateId."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable
from typing import Any

from ..errors import FieldError
from .values import (
    MAX_ID,
    Errors,
    currency,
    describe,
    flat_item,
    identifier,
    is_amount,
    is_text,
    json_text,
    need_number,
    param_text,
    pass_through,
    plain_pass_through,
    required,
)

# recycleStateId: Latin letters, digits and '-' (the guide's example is a UUID).
MAX_RECYCLE_STATE_ID = 100
# Length of a derived recycleStateId (hex digits of a SHA-1).
_DERIVED_RECYCLE_LEN = 32
_RECYCLE_STATE_ID = re.compile(r"[A-Za-z0-9-]+", re.ASCII)

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


def _recycle_state_id(value: object, mid: str) -> str | None:
    if value is None:
        # Derived from the messageId, so a retried event keeps its cart state id.
        return hashlib.sha1(mid.encode()).hexdigest()[:_DERIVED_RECYCLE_LEN]
    if (
        isinstance(value, str)
        and len(value) <= MAX_RECYCLE_STATE_ID
        and _RECYCLE_STATE_ID.fullmatch(value)
    ):
        return value
    return None


def cart_params(
    props: dict[Any, Any],
    at: Callable[[str], str],
    errors: Errors,
    mid: str,
    tz: datetime.tzinfo,
    check: bool,
) -> list[tuple[str, str]]:
    """cartUpdated's params: the whole cart, its currency and its recycleStateId."""
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
    state_id = _recycle_state_id(recycle, mid)
    if state_id is not None:
        out.append(("recycleStateId", state_id))
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


def fast_cart_params(
    props: dict[Any, Any], mid: str, tz: datetime.tzinfo, check: bool
) -> list[tuple[str, str]] | None:
    """`cart_params` for a cart in the common shape (no error paths built); else None.

    A product of just productId, quantity and price, in shape, is already as Yespo keeps it,
    and is used as it is (it is only serialized).
    """
    products = props.get("products")
    if type(products) is not list:
        return None
    for product in products:
        if not (
            type(product) is dict
            and len(product) == 3
            and is_text(product.get("productId"), MAX_ID)
            and is_amount(product.get("quantity"), positive=True)
            and is_amount(product.get("price"))
        ):
            return None
    products_text = json_text(products)
    if products_text is None:
        return None
    out = [("products", products_text)]
    code = props.get("currencyCode")
    if code is not None:
        code = currency(code, "", [])
        if code is None:
            return None
        out.append(("currencyCode", code))
    state_id = _recycle_state_id(props.get("recycleStateId"), mid)
    if state_id is None:
        return None
    out.append(("recycleStateId", state_id))
    return out if plain_pass_through(props, _CART_FIELDS, out) else None
