"""No input makes the normalizers raise: odd values put everywhere an event can hold a value.

(A table of odd values placed at every known position: hypothesis, in
test_normalize_properties.py, explores shapes and combinations, and reaches these edges only
by chance.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from collector.errors import FieldError
from collector.normalize import (
    Normalized,
    Rules,
    normalize_event,
    normalize_order,
    normalize_yespo_event,
)


def nested(depth: int, leaf: object, wrap: Callable[[object], object]) -> object:
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


# Values that JSON can carry, chosen to sit at the edges of what each field accepts.
ODD: list[object] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    1e-300,
    1e300,
    1.5,
    "",
    " ",
    "x",
    "0",
    "1e400",
    "NaN",
    "-1",
    "2020-05-14",
    "a@b.co",
    "\x00\n\t",
    "é漢🙂",
    "x" * 300_000,
    "é" * 30_000,
    [],
    [None],
    [1, "a", True],
    [[1]],
    [{}],
    [{"a": {"b": [1]}}],
    {},
    {"type": 5},
    {"location": None},
    {"": ""},
    nested(2_000, 1, lambda v: [v]),
    nested(2_000, 1, lambda v: {"a": v}),
    [list(range(50))] * 50,
]
# Values Python can hold but a JSON parser never produces: still no exception.
BEYOND_JSON: list[object] = [
    float("nan"),
    float("inf"),
    2**80,
    10**5000,  # str() of it raises ValueError in Python 3.11
    -(10**5000),
    "\ud800",
    {1: 2},
    (1, 2),
    {1, 2},
    object(),
    b"bytes",
]
VALUES = ODD + BEYOND_JSON

ITEM = {
    "externalItemId": "1",
    "name": "n",
    "quantity": 1,
    "cost": 1,
    "url": "https://x.example/i",
    "imageUrl": "https://x.example/i.png",
}
PROPERTIES: dict[str, dict[str, Any]] = {
    "pageViewed": {"location": "https://x.example/", "title": "t"},
    "productViewed": {
        "productId": "P",
        "price": 1,
        "isInStock": 1,
        "quantity": 1,
        "currencyCode": "USD",
        "extra": "x",
    },
    "productCategoryViewed": {"productCategoryId": "C"},
    "cartUpdated": {
        "products": [{"productId": "P", "quantity": 1, "price": 1, "x": 1}],
        "currencyCode": "USD",
        "recycleStateId": "r",
    },
    "orderCreated": {
        "externalOrderId": "O",
        "totalCost": 1,
        "status": "INITIALIZED",
        "date": "2020-05-14",
        "currency": "UAH",
        "shipping": 0,
        "items": [ITEM],
    },
    "orderCancelled": {"externalOrderId": "O", "items": [ITEM], "totalCost": 1},
    "custom": {"items": [{"a": 1}], "x": 1},
}
INBOUND: dict[str, Any] = {
    "type": "pageViewed",
    "messageId": "m",
    "timestamp": 1589451060000,
    "contact": {
        "email": "a@b.co",
        "phone": "380501234567",
        "externalCustomerId": "c",
        "contactId": "1",
        "contactKey": "k",
        "pushToken": "t",
    },
    "properties": {},
    "context": {},
    "anonymousId": "a",
}
RULES = [Rules(), Rules(check_order_total=False, identifying=(), key_value_order=())]


def new_id() -> str:
    return "generated-id"


def placed(base: dict[str, Any], path: tuple[object, ...], value: object) -> dict[str, Any]:
    """A copy of `base` with `value` at `path` (keys and list indexes)."""
    out = copy.deepcopy(base)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def positions(value: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    """Every path into a small JSON value, containers included."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from positions(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield (*prefix, i)
            yield from positions(child, (*prefix, i))


def check(result: Normalized | list[FieldError]) -> None:
    if isinstance(result, Normalized):
        body = orjson.loads(result.body)
        if result.kind == "event":
            assert all(isinstance(p["value"], str) for p in body["params"])
        return
    assert isinstance(result, list)
    assert result, "an invalid input must have at least one error"
    for error in result:
        assert isinstance(error, FieldError)
        assert isinstance(error.field, str)
        assert isinstance(error.message, str)
        assert error.message


def inbound_events() -> Iterator[dict[str, Any]]:
    for event_type, props in PROPERTIES.items():
        yield {**INBOUND, "type": event_type, "properties": props}


def test_whole_input_of_any_shape() -> None:
    for normalize in (normalize_event, normalize_yespo_event, normalize_order):
        for value in VALUES:
            check(normalize(value, Rules(), new_id))


def test_inbound_event_with_an_odd_value_anywhere() -> None:
    for base in inbound_events():
        paths = [*positions(base), ("unknown",), ("properties", "more")]
        for path in paths:
            for value in VALUES:
                for rules in RULES:
                    check(normalize_event(placed(base, path, value), rules, new_id))


def yespo_bodies() -> Iterator[dict[str, Any]]:
    for base in inbound_events():
        result = normalize_event(base, Rules(), new_id)
        assert isinstance(result, Normalized), result
        yield {"messageId": "m", **orjson.loads(result.body)}


def test_yespo_event_with_an_odd_value_anywhere() -> None:
    for base in yespo_bodies():
        paths = [*positions(base), ("unknown",), ("params", 0, "extra")]
        for path in paths:
            for value in VALUES:
                for rules in RULES:
                    check(normalize_yespo_event(placed(base, path, value), rules, new_id))


def test_yespo_packed_params_with_odd_json_inside() -> None:
    for base in yespo_bodies():
        for i, param in enumerate(base["params"]):
            for value in ODD:
                try:
                    text = orjson.dumps(value).decode()
                except TypeError:
                    continue
                check(
                    normalize_yespo_event(
                        placed(base, ("params", i, "value"), text), Rules(), new_id
                    )
                )
                if isinstance(value, dict):
                    inner = orjson.loads(param["value"]) if param["value"].startswith("{") else {}
                    merged = orjson.dumps({**inner, **value}).decode()
                    check(
                        normalize_yespo_event(
                            placed(base, ("params", i, "value"), merged), Rules(), new_id
                        )
                    )


def test_add_orders_object_with_an_odd_value_anywhere() -> None:
    base = {
        **PROPERTIES["orderCreated"],
        "externalCustomerId": "c",
        "email": "a@b.co",
        "phone": "380501234567",
    }
    for path in [*positions(base), ("unknown",)]:
        for value in VALUES:
            for rules in RULES:
                check(normalize_order(placed(base, path, value), rules, new_id))


def test_valid_events_survive_the_fuzz_bases() -> None:
    # The bases above are valid, so the fuzzing starts from events that pass.
    for base in inbound_events():
        assert isinstance(normalize_event(base, Rules(), new_id), Normalized)
