"""The fast paths give exactly what the thorough checks give, on every input we can think of.

Each normalizer handles the common shape of an input in one pass and falls back to the
thorough checks (which report every problem) as soon as anything is off. The corpus below
(the other normalize tests' tables, the fuzz positions and values, and variations of
typical events) runs through both, so the fast paths cannot drift from the rules; typical
events are also pinned to their exact bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from collector.errors import FieldError
from collector.normalize import (
    Normalized,
    Rules,
    inbound,
    normalize_event,
    normalize_order,
    normalize_yespo_event,
    orders,
)
from collector.normalize import core as normalize
from collector.normalize.event_types import CUSTOM, HANDLERS, split_params
from collector.normalize.values import Paths
from tests import (
    test_normalize,
    test_normalize_fuzz,
    test_normalize_orders,
    test_normalize_seeds,
    test_normalize_yespo,
)
from tests.test_normalize_fuzz import VALUES, placed, positions

Result = Normalized | list[FieldError]

# Typical events as a shop sends them (the benchmark's events).
ITEMS = [
    {
        "externalItemId": "WS01-L-Green",
        "name": "Radiant Tee",
        "quantity": 1,
        "cost": 45.5,
        "url": "https://shop.example/p/ws01",
        "imageUrl": "https://shop.example/i/ws01.jpg",
    },
    {
        "externalItemId": "MH02-M-Black",
        "name": "Teton Pullover Hoodie",
        "quantity": 2,
        "cost": 64,
        "url": "https://shop.example/p/mh02",
        "imageUrl": "https://shop.example/i/mh02.jpg",
    },
    {
        "externalItemId": "24-MB01",
        "name": "Joust Duffle Bag",
        "quantity": 1,
        "cost": 34.0,
        "url": "https://shop.example/p/24-mb01",
        "imageUrl": "https://shop.example/i/24-mb01.jpg",
    },
]
TYPICAL: dict[str, dict[str, Any]] = {
    "productViewed": {
        "type": "productViewed",
        "messageId": "r-1-1",
        "contact": {"email": "buyer12@example.com"},
        "properties": {
            "productId": "WS01-L-Green",
            "price": 45.5,
            "isInStock": 1,
            "color": ["green"],
            "currencyCode": "USD",
        },
        "context": {
            "page": {
                "url": "https://shop.example/p/ws01?color=green&size=L",
                "referrer": "https://shop.example/c/womens-tops",
                "title": "WS01 green",
            },
            "userAgent": "Mozilla/5.0 ... bench",
            "locale": "en-US",
            "timezone": "Europe/Kyiv",
        },
    },
    "pageViewed": {
        "type": "pageViewed",
        "messageId": "m-1",
        "contact": {"email": "a@example.com"},
        "properties": {"location": "https://shop.example/"},
    },
    "productCategoryViewed": {
        "type": "productCategoryViewed",
        "messageId": "k-1",
        "contact": {"email": "a@example.com"},
        "properties": {"productCategoryId": "womens-tops"},
    },
    "cartUpdated": {
        "type": "cartUpdated",
        "messageId": "c-1",
        "contact": {"email": "buyer12@example.com"},
        "properties": {
            "products": [
                {"productId": "WS01-L-Green", "quantity": 1, "price": 45.5},
                {"productId": "MH02-M-Black", "quantity": 2, "price": 64},
                {"productId": "24-MB01", "quantity": 1, "price": 34.0},
            ],
            "currencyCode": "USD",
        },
    },
    "orderCreated": {
        "type": "orderCreated",
        "messageId": "o-1",
        "contact": {"email": "buyer12@example.com", "phone": "+380501234567"},
        "properties": {
            "externalOrderId": "100012",
            "totalCost": 207.5,
            "status": "INITIALIZED",
            "date": "2024-05-14T10:11:00+03:00",
            "currency": "USD",
            "items": ITEMS,
        },
    },
    "signedUp": {
        "type": "signedUp",
        "contact": {"email": "a@example.com"},
        "properties": {"plan": "pro", "seats": 3, "items": [{"sku": "a", "tags": ["x"]}]},
    },
}

# The bodies the collector sent for them before it had fast paths.
TYPICAL_BODIES = {
    "productViewed": b'{"eventTypeKey":"productViewed","keyValue":"buyer12@example.com","params":[{"name":"email","value":"buyer12@example.com"},{"name":"product","value":"{\\"productId\\":\\"WS01-L-Green\\",\\"price\\":45.5,\\"isInStock\\":1,\\"color\\":[\\"green\\"]}"},{"name":"currencyCode","value":"USD"}]}',
    "pageViewed": b'{"eventTypeKey":"pageViewed","keyValue":"a@example.com","params":[{"name":"email","value":"a@example.com"},{"name":"page","value":"{\\"location\\":\\"https://shop.example/\\"}"}]}',
    "cartUpdated": b'{"eventTypeKey":"cartUpdated","keyValue":"buyer12@example.com","params":[{"name":"email","value":"buyer12@example.com"},{"name":"products","value":"[{\\"productId\\":\\"WS01-L-Green\\",\\"quantity\\":1,\\"price\\":45.5},{\\"productId\\":\\"MH02-M-Black\\",\\"quantity\\":2,\\"price\\":64},{\\"productId\\":\\"24-MB01\\",\\"quantity\\":1,\\"price\\":34.0}]"},{"name":"currencyCode","value":"USD"},{"name":"recycleStateId","value":"e788f4936329abb59fd58bf756e66b5a"}]}',
    "orderCreated": b'{"eventTypeKey":"orderCreated","keyValue":"buyer12@example.com","params":[{"name":"email","value":"buyer12@example.com"},{"name":"phone","value":"380501234567"},{"name":"externalOrderId","value":"100012"},{"name":"totalCost","value":"207.5"},{"name":"status","value":"INITIALIZED"},{"name":"date","value":"2024-05-14T07:11:00"},{"name":"currency","value":"USD"},{"name":"items","value":"[{\\"externalItemId\\":\\"WS01-L-Green\\",\\"name\\":\\"Radiant Tee\\",\\"quantity\\":1,\\"cost\\":45.5,\\"url\\":\\"https://shop.example/p/ws01\\",\\"imageUrl\\":\\"https://shop.example/i/ws01.jpg\\"},{\\"externalItemId\\":\\"MH02-M-Black\\",\\"name\\":\\"Teton Pullover Hoodie\\",\\"quantity\\":2,\\"cost\\":64,\\"url\\":\\"https://shop.example/p/mh02\\",\\"imageUrl\\":\\"https://shop.example/i/mh02.jpg\\"},{\\"externalItemId\\":\\"24-MB01\\",\\"name\\":\\"Joust Duffle Bag\\",\\"quantity\\":1,\\"cost\\":34.0,\\"url\\":\\"https://shop.example/p/24-mb01\\",\\"imageUrl\\":\\"https://shop.example/i/24-mb01.jpg\\"}]"}]}',
}

# The same order as an object of Yespo's Add-orders body, and what the collector sent for it.
ADD_ORDER = {
    **TYPICAL["orderCreated"]["properties"],
    "externalCustomerId": "c1",
    "email": "Buyer12@Example.com",
}
ADD_ORDER_BODY = b'{"externalOrderId":"100012","totalCost":207.5,"status":"INITIALIZED","date":"2024-05-14T07:11:00","currency":"USD","items":[{"externalItemId":"WS01-L-Green","name":"Radiant Tee","quantity":1,"cost":45.5,"url":"https://shop.example/p/ws01","imageUrl":"https://shop.example/i/ws01.jpg"},{"externalItemId":"MH02-M-Black","name":"Teton Pullover Hoodie","quantity":2,"cost":64,"url":"https://shop.example/p/mh02","imageUrl":"https://shop.example/i/mh02.jpg"},{"externalItemId":"24-MB01","name":"Joust Duffle Bag","quantity":1,"cost":34.0,"url":"https://shop.example/p/24-mb01","imageUrl":"https://shop.example/i/24-mb01.jpg"}],"externalCustomerId":"c1","email":"buyer12@example.com"}'

RULES = [
    Rules(),
    Rules(check_order_total=False, identifying=(), key_value_order=()),
    Rules(timezone=ZoneInfo("Europe/Kyiv")),
    Rules(identifying=("email",), key_value_order=("phone", "email")),
]

# Valid and invalid variations of the typical events: (event, path, value).
DATES = [
    "2024-05-14",
    "2024-05-14T10:11:00",
    "2024-05-14T10:11:00Z",
    "2024-05-14T10:11:00.999999+03:00",
    "2000-01-01T00:30:00+03:00",
    "2099-12-31T23:30:00-03:00",
    "2024-13-01",
    1715670660000,
    1715670660000.5,
    1715670660,
]
CONTACTS: list[object] = [
    {"email": " Buyer12@Example.COM "},
    {"phone": "+38 (050) 123-45-67"},
    {"email": "a@example.com", "contactId": 5, "pushToken": "t"},
    {"externalCustomerId": "c1"},
    {"externalCustomerId": 17, "contactKey": "k"},
    {"contactKey": "k"},
    {"email": None, "phone": "380501234567"},
    {"email": "a@example.com", "phone": "12"},
    {"email": "a@example.com", "mail": "a@example.com"},
]
VARIANTS: list[tuple[str, tuple[object, ...], object]] = [
    *[(name, ("contact",), c) for name in TYPICAL for c in CONTACTS],
    *[(name, ("messageId",), None) for name in TYPICAL],
    *[(name, ("timestamp",), t) for name in ("pageViewed", "cartUpdated") for t in DATES],
    *[(name, ("anonymousId",), "anon-1") for name in TYPICAL],
    *[(name, ("type",), "custom-event") for name in TYPICAL],
    *[(name, ("properties",), None) for name in TYPICAL],
    *[(name, ("properties",), {}) for name in TYPICAL],
    ("pageViewed", ("properties", "location"), "myapp://cart"),
    ("pageViewed", ("properties", "location"), "shop.example/"),
    ("pageViewed", ("properties", "location"), "https://x.example/" + "a" * 2048),
    ("pageViewed", ("properties", "page"), None),
    ("pageViewed", ("properties", "page"), "x"),
    ("pageViewed", ("properties", "title"), "Home"),
    ("pageViewed", ("properties", "ratio"), 1.5),
    ("pageViewed", ("properties", "tags"), {"a": [1]}),
    ("pageViewed", ("properties", "Email"), "a@example.com"),
    ("productViewed", ("properties", "productId"), 12345),
    ("productViewed", ("properties", "productId"), " "),
    ("productViewed", ("properties", "price"), "45.50"),
    ("productViewed", ("properties", "price"), 0),
    ("productViewed", ("properties", "price"), 1e400),
    ("productViewed", ("properties", "isInStock"), True),
    ("productViewed", ("properties", "isInStock"), False),
    ("productViewed", ("properties", "isInStock"), 0),
    ("productViewed", ("properties", "isInStock"), 1.0),
    ("productViewed", ("properties", "quantity"), 2),
    ("productViewed", ("properties", "quantity"), "3"),
    ("productViewed", ("properties", "color"), ["green", 1, 1.5, True]),
    ("productViewed", ("properties", "color"), ["green", None]),
    ("productViewed", ("properties", "size"), 42.0),
    ("productViewed", ("properties", "size"), False),
    ("productViewed", ("properties", "currencyCode"), "usd"),
    ("cartUpdated", ("properties", "recycleStateId"), "d59c6e6d-4123"),
    ("cartUpdated", ("properties", "recycleStateId"), "d59c_6e6d"),
    ("cartUpdated", ("properties", "products"), []),
    ("cartUpdated", ("properties", "products", 0, "quantity"), "2"),
    ("cartUpdated", ("properties", "products", 0, "price"), "1.50"),
    ("cartUpdated", ("properties", "products", 0, "productId"), 17),
    ("cartUpdated", ("properties", "products", 0, "sizes"), ["S", "M", 1]),
    ("cartUpdated", ("properties", "products", 0, "meta"), {"a": {"b": 1}}),
    ("cartUpdated", ("properties", "note"), "gift"),
    *[("orderCreated", ("properties", "date"), d) for d in DATES],
    *[
        ("orderCreated", ("properties", "totalCost"), t)
        for t in ["207.5", "207.50", 207.51, 207.52, 207, "abc", "2e2"]
    ],
    ("orderCreated", ("properties", "shipping"), 0.0),
    ("orderCreated", ("properties", "shipping"), 10),
    ("orderCreated", ("properties", "status"), "in_progress"),
    ("orderCreated", ("properties", "currency"), "usd"),
    ("orderCreated", ("properties", "externalOrderId"), 100012),
    ("orderCreated", ("properties", "items", 0, "quantity"), "1"),
    ("orderCreated", ("properties", "items", 0, "externalItemId"), 5),
    ("orderCreated", ("properties", "items", 0, "extra"), {"a": 1}),
    ("orderCreated", ("properties", "items", 0, "tags"), ["a", 1]),
    ("orderCreated", ("properties", "coupon"), "SPRING"),
    *[("orderCreated", ("type",), t) for t in sorted(orders.ORDER_EVENT_TYPES)],
    ("signedUp", ("properties", "items"), []),
    ("signedUp", ("properties", "items"), [{"a": float("nan")}]),
]


def _params(values: list[Any]) -> list[Any]:
    """The raw inputs of a pytest.param table (`raw` comes first)."""
    return [p.values[0] for p in values]


def inbound_cases() -> Iterator[tuple[object, Rules]]:
    """Inputs for normalize_event: the tables, the fuzz placements and the variations."""
    tables: list[object] = [
        *_params(test_normalize.INVALID),
        *(test_normalize.event(t) for t in test_normalize.VALID_PROPERTIES),
        *(p.values[1] for p in test_normalize_seeds.EVENT_SEEDS),
        *(p.values[1] for p in test_normalize_seeds.ORDER_SEEDS),
        *VALUES,
    ]
    for raw, rules in itertools.product(tables, RULES):
        yield raw, rules
    bases = [*test_normalize_fuzz.inbound_events(), *TYPICAL.values()]
    for base in bases:
        extra_paths = [("unknown",), ("properties", "more"), ("contact", "phone")]
        for path in [*positions(base), *extra_paths]:
            for value in VALUES:
                for rules in RULES[:2]:
                    yield placed(base, path, value), rules
    for name, path, value in VARIANTS:
        for rules in RULES:
            yield placed(TYPICAL[name], path, value), rules


def yespo_cases() -> Iterator[tuple[object, Rules]]:
    """Inputs for normalize_yespo_event, built the same way."""
    tables: list[object] = [
        *_params(test_normalize_yespo.INVALID),
        *(p.values[0] for p in test_normalize_seeds.EVENT_SEEDS),
        *(orjson.loads(str(p.values[0])) for p in test_normalize_seeds.ORDER_SEEDS),
        *VALUES,
    ]
    for raw, rules in itertools.product(tables, RULES):
        yield raw, rules
    bases = list(test_normalize_fuzz.yespo_bodies())
    for raw in TYPICAL.values():
        result = normalize_event(raw, Rules(), lambda: "generated-id")
        assert isinstance(result, Normalized), result
        bases.append({"messageId": "m", **orjson.loads(result.body)})
    for base in bases:
        for path in [*positions(base), ("unknown",), ("params", 0, "extra")]:
            for value in VALUES:
                for rules in RULES[:2]:
                    yield placed(base, path, value), rules


def order_cases() -> Iterator[tuple[object, Rules]]:
    """Inputs for normalize_order."""
    base = ADD_ORDER
    tables: list[object] = [
        *_params(test_normalize_orders.ORDER_INVALID),
        test_normalize_orders.ORDER,
        test_normalize_seeds.seed_003_order(),
        base,
        *VALUES,
    ]
    for raw, rules in itertools.product(tables, RULES):
        yield raw, rules
    for path in [*positions(base), ("unknown",), ("phone",)]:
        for value in VALUES:
            for rules in RULES[:2]:
                yield placed(base, path, value), rules
    for name, path, value in VARIANTS:
        if name == "orderCreated" and path[0] == "properties" and len(path) > 1:
            for rules in RULES:
                yield placed(base, path[1:], value), rules


# --- the tests -----------------------------------------------------------------------------


def counting_ids() -> tuple[Callable[[], str], list[str]]:
    """A new_id that records what it hands out."""
    drawn: list[str] = []

    def new_id() -> str:
        drawn.append(f"id-{len(drawn)}")
        return drawn[-1]

    return new_id, drawn


def exact(result: Result) -> object:
    """A result in a form that compares exactly: each field with its type, or the errors."""
    if isinstance(result, Normalized):
        return [(type(v), v) for v in dataclasses.astuple(result)]
    assert isinstance(result, list)
    return [(type(e), e.field, e.message) for e in result]


@pytest.mark.parametrize("name", sorted(TYPICAL_BODIES))
def test_typical_event_keeps_its_exact_body(name: str) -> None:
    raw = TYPICAL[name]
    result = normalize_event(raw, Rules(), lambda: "generated-id")
    assert isinstance(result, Normalized), result
    assert result.body == TYPICAL_BODIES[name]
    assert (result.message_id, result.client_id, result.event_type) == (
        raw["messageId"],
        True,
        name,
    )
    in_yespo_form = {"messageId": raw["messageId"], **orjson.loads(result.body)}
    again = normalize_yespo_event(in_yespo_form, Rules(), lambda: "generated-id")
    assert isinstance(again, Normalized), again
    assert exact(again) == exact(result)


def test_typical_add_orders_object_keeps_its_exact_body() -> None:
    result = normalize_order(ADD_ORDER, Rules(), lambda: "generated-id")
    assert isinstance(result, Normalized), result
    assert result.body == ADD_ORDER_BODY
    assert result.key == "order:100012"


def test_fast_event_agrees_with_the_checked_event() -> None:
    fast_results = 0
    for raw, rules in inbound_cases():
        if type(raw) is not dict:
            continue
        fast_id, fast_drawn = counting_ids()
        fast = normalize._fast_event(raw, rules, fast_id)
        if fast is None:
            assert not fast_drawn, f"gave up after drawing an id: {raw!r:.300}"
            continue
        fast_results += 1
        checked_id, checked_drawn = counting_ids()
        checked = normalize._checked_event(raw, rules, checked_id)
        assert exact(fast) == exact(checked), f"{raw!r:.300}"
        assert fast_drawn == checked_drawn
    assert fast_results > 5_000  # the corpus does go through the fast path


def type_properties() -> Iterator[tuple[str, dict[Any, Any]]]:
    """(type, properties) of each input of the corpus, the Yespo-form ones parsed back."""
    for raw, _ in inbound_cases():
        if isinstance(raw, dict) and isinstance(raw.get("properties"), dict):
            yield _type_name(raw.get("type")), raw["properties"]
    for raw, _ in yespo_cases():
        if isinstance(raw, dict) and isinstance(raw.get("params"), list):
            type_name = _type_name(raw.get("eventTypeKey"))
            yield type_name, split_params(raw["params"], type_name, []).props


def _type_name(value: object) -> str:
    return value if isinstance(value, str) else ""


def test_fast_params_agree_with_the_handlers() -> None:
    fast_results = 0
    settings = [(datetime.UTC, True), (ZoneInfo("Europe/Kyiv"), False)]
    for type_name, props in type_properties():
        fast, handler = HANDLERS.get(type_name, CUSTOM)
        for tz, check in settings:
            params = fast(props, "m-1", tz, check)
            if params is None:
                continue
            fast_results += 1
            errors: list[FieldError] = []
            assert handler(props, Paths("properties"), errors, "m-1", tz, check) == params
            assert errors == [], f"{type_name} {props!r:.300}"
    assert fast_results > 40_000


def test_plain_items_agree_with_the_checked_items() -> None:
    item_lists = [
        raw["properties"]["items"]
        for raw, _ in inbound_cases()
        if isinstance(raw, dict)
        and isinstance(raw.get("properties"), dict)
        and "items" in raw["properties"]
    ]
    item_lists += [
        raw["items"] for raw, _ in order_cases() if isinstance(raw, dict) and "items" in raw
    ]
    plain_results = 0
    for value in item_lists:
        for flatten in (True, False):
            plain = orders._plain_items(value, flatten)
            if plain is None:
                continue
            plain_results += 1
            errors: list[FieldError] = []
            checked = orders._checked_items(value, "items", errors, flatten)
            assert repr(checked) == repr(plain), f"{value!r:.300}"
            assert errors == []
    assert plain_results > 7_000


def test_struct_decoding_agrees_with_orjson() -> None:
    """/v1/events reads plain bodies with `inbound.decode` and the rest with orjson: for any
    event, alone or in a batch, both readings normalize to exactly the same result."""
    decoded = 0
    for raw, rules in inbound_cases():
        try:
            body = orjson.dumps(raw)
        except TypeError:
            continue  # no JSON form, so no request body can carry it
        for wrapped, batch in ((body, False), (b'{"batch":[' + body + b"]}", True)):
            got = inbound.decode(wrapped)
            if got is None:
                continue
            assert isinstance(got, list) is batch, wrapped
            event = got[0] if isinstance(got, list) else got
            struct_id, struct_drawn = counting_ids()
            via_struct = normalize.normalize_inbound(event, rules, struct_id)
            orjson_id, orjson_drawn = counting_ids()
            via_orjson = normalize_event(orjson.loads(body), rules, orjson_id)
            assert exact(via_struct) == exact(via_orjson), f"{raw!r:.300}"
            assert struct_drawn == orjson_drawn
            decoded += 1
    assert decoded > 10_000  # the corpus does go through the struct path


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'[{"type":"pageViewed"}]',
        b'{"type":"pageViewed",}',
        b'{"type":"pageViewed","typo":1}',
        b'{"type":"pageViewed","context":[]}',
        b'{"type":"pageViewed","context":"page"}',
        b'{"batch":null}',
        b'{"batch":{}}',
        b'{"batch":[{"type":"pageViewed"}],"type":"pageViewed"}',
        b'{"batch":[{"type":"pageViewed"},7]}',
        b'{"batch":[{"type":"pageViewed"},{"typo":1}]}',
        b'{"type":"page\xffViewed"}',
        b'{"type":"pageViewed","context":{"title":"\xff"}}',
        b'{"type":"pageViewed","context":{"title":"\\ud800"}}',
        b'{"type":"pageViewed","properties":{"deep":' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"type":"pageViewed","context":{"deep":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ],
)
def test_struct_decoding_leaves_the_rest_to_orjson(body: bytes) -> None:
    """Whatever is not plainly an event or a batch of event objects goes the orjson way,
    which names the problem (decode never raises)."""
    assert inbound.decode(body) is None
