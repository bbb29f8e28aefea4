"""A remembered cart: the whole cart Yespo's cartUpdated wants, built one product at a time.

Segment's SDKs send one product per Product Added or Product Removed; Yespo wants every
cartUpdated to carry the whole cart. So each shopper's cart is remembered (in the spool's
`CartStore`, as the bytes `dump` makes) and each change applied to it here. Pure: the
caller loads, applies and saves.

A change is applied once: the cart remembers the messageIds of its latest changes, so a
call its sender retries (its first answer lost) does not add its product twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .segment import CartChange

# A Yespo event is at most 20 KB: about a hundred products of a typical size fit in one
# cartUpdated. A cart past that is refused a new product rather than made unsendable.
MAX_CART_PRODUCTS = 100
# The messageIds remembered per cart: far more than the changes one batch retried by an SDK
# can hold for one shopper.
MAX_APPLIED = 100


@dataclass(slots=True)
class Cart:
    """The products (Yespo's lines: productId, quantity, price, ...) and the ids of the
    changes already applied."""

    products: list[dict[str, Any]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, data: bytes | None) -> Cart:
        if data is None:
            return cls()
        saved = orjson.loads(data)
        return cls(list(saved.get("products", [])), list(saved.get("applied", [])))

    def dump(self) -> bytes | None:
        """The bytes to save; None for an empty cart (nothing to remember)."""
        if not self.products:
            return None
        return orjson.dumps({"products": self.products, "applied": self.applied})

    def copy(self) -> Cart:
        return Cart([dict(p) for p in self.products], list(self.applied))

    def lines(self) -> list[dict[str, Any]]:
        """The cart as cartUpdated's products (each with a quantity)."""
        return [{**p, "quantity": p.get("quantity", 1)} for p in self.products]


def apply(cart: Cart, change: CartChange, message_id: str | None) -> str | None:
    """Apply `change` to `cart` (in place), unless the call was applied already; None, or
    why the change cannot be made (the cart is then as it was).

    `add` puts the product in, or adds its quantity (1 if not given) to the line of the
    same productId, whose other fields take the new values. `remove` takes its quantity off
    the line, or the whole line when no quantity is given (and a product not in the cart
    is nothing to remove). `replace` makes the lines the cart; `empty` empties it."""
    if message_id is not None and message_id in cart.applied:
        return None
    if change.op == "add":
        [line] = change.lines
        found = _find(cart, line["productId"])
        if found is None:
            if len(cart.products) >= MAX_CART_PRODUCTS:
                return f"the cart holds {MAX_CART_PRODUCTS} products, as many as a Yespo event fits"
            cart.products.append({**line, "quantity": line.get("quantity", 1)})
        else:
            quantity = found.get("quantity", 1) + line.get("quantity", 1)
            found.update(line)
            found["quantity"] = quantity
    elif change.op == "remove":
        [line] = change.lines
        found = _find(cart, line["productId"])
        if found is not None:
            left = found.get("quantity", 1) - line["quantity"] if "quantity" in line else 0
            if left > 0:
                found["quantity"] = left
            else:
                cart.products.remove(found)
    elif change.op == "replace":
        if len(change.lines) > MAX_CART_PRODUCTS:
            return f"the cart holds more than {MAX_CART_PRODUCTS} products, more than a Yespo event fits"
        cart.products = [{**line, "quantity": line.get("quantity", 1)} for line in change.lines]
    elif change.op == "empty":
        cart.products = []
    if message_id is not None:
        cart.applied = [*cart.applied[-(MAX_APPLIED - 1) :], message_id]
    return None


def _find(cart: Cart, product_id: str) -> dict[str, Any] | None:
    for product in cart.products:
        if product["productId"] == product_id:
            return product
    return None
