"""normalize_yespo_event: bodies already in Yespo's Generate-event form, checked by the same rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.errors import FieldError
from collector.normalize import Normalized, Rules, normalize_event, normalize_yespo_event

RULES = Rules()
ITEM = {
    "externalItemId": "200600",
    "name": "Super Device",
    "quantity": 1,
    "cost": 990,
    "url": "http://example.com/item/200600",
    "imageUrl": "http://example.com/item/200600/image.png",
}


def new_id() -> str:
    return "generated-id"


def body(event_type: str, *params: tuple[str, object] | object, **top: Any) -> dict[str, Any]:
    """A Yespo-form body with an email param; a tuple is (name, value), anything else as is."""
    raw: dict[str, Any] = {
        "eventTypeKey": event_type,
        "params": [{"name": "email", "value": "example@email.com"}]
        + [{"name": p[0], "value": p[1]} if isinstance(p, tuple) else p for p in params],
    }
    for key, value in top.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def ok(raw: object) -> Normalized:
    result = normalize_yespo_event(raw, RULES, new_id)
    assert isinstance(result, Normalized), result
    return result


def sent(raw: object) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(ok(raw).body)
    return out


def errors(raw: object) -> list[FieldError]:
    result = normalize_yespo_event(raw, RULES, new_id)
    assert isinstance(result, list), result
    assert result
    return result


PAGE = ("page", '{"location":"https://example.com"}')
CATEGORY = ("category", '{"productCategoryId":"a"}')
PRODUCT_RED = '{"productId":"A","price":1,"color":["red"]}'
ORDER = [
    ("externalOrderId", "1"),
    ("totalCost", "990"),
    ("status", "INITIALIZED"),
    ("date", "2020-05-14T10:11:00"),
]


def test_identifier_params_become_the_contact_in_canonical_names() -> None:
    raw = {
        "eventTypeKey": "pageViewed",
        "params": [
            {"name": "SMS", "value": "+38 050 123 45 67"},
            {"name": "EmailAddress", "value": "John@Example.com"},
            {"name": "Contact_id", "value": "42"},
            {"name": "page", "value": PAGE[1]},
        ],
    }
    got = sent(raw)
    assert got["keyValue"] == "john@example.com"
    assert got["params"] == [
        {"name": "email", "value": "john@example.com"},
        {"name": "phone", "value": "380501234567"},
        {"name": "contactId", "value": "42"},
        {"name": "page", "value": '{"location":"https://example.com"}'},
    ]


def test_sender_key_value_is_kept() -> None:
    got = sent(body("pageViewed", PAGE, keyValue="Other-Key"))
    assert got["keyValue"] == "Other-Key"


def test_message_id_is_accepted_and_marked_as_the_clients() -> None:
    out = ok(body("pageViewed", PAGE, messageId="m-1"))
    assert (out.message_id, out.client_id, out.event_time) == ("m-1", True, None)


def test_packed_values_may_be_raw_json_values() -> None:
    raw = body("pageViewed", ("page", {"location": "https://example.com"}))
    assert sent(raw) == sent(body("pageViewed", PAGE))


def test_product_viewed_keeps_other_params_as_params() -> None:
    raw = body(
        "productViewed",
        ("product", '{"productId":"P1","price":"10","colour":["red"]}'),
        ("currencyCode", "usd"),
        ("source", "feed"),
    )
    got = {p["name"]: p["value"] for p in sent(raw)["params"]}
    assert orjson.loads(got["product"]) == {"productId": "P1", "price": 10, "colour": ["red"]}
    assert (got["currencyCode"], got["source"]) == ("USD", "feed")


def test_same_event_in_both_forms_gives_the_same_body() -> None:
    inbound = {
        "type": "orderCreated",
        "contact": {"email": "example@email.com"},
        "properties": {**dict(ORDER), "items": [ITEM], "note": {"gift": True}},
    }
    yespo = body(
        "orderCreated", *ORDER, ("items", orjson.dumps([ITEM]).decode()), ("note", '{"gift":true}')
    )
    from_inbound = normalize_event(inbound, RULES, new_id)
    assert isinstance(from_inbound, Normalized)
    assert ok(yespo).body == from_inbound.body


def test_a_contacts_events_are_ordered_together_whichever_form_they_came_in() -> None:
    raw = body("pageViewed", PAGE, keyValue="+38 (050) 123-45-67")
    raw["params"] = [
        {"name": "SMS", "value": "+38 (050) 123-45-67"},
        {"name": PAGE[0], "value": PAGE[1]},
    ]
    out = ok(raw)
    assert orjson.loads(out.body)["keyValue"] == "+38 (050) 123-45-67"  # the sender's, kept
    inbound = {"type": "pageViewed", "contact": {"phone": "380501234567"},
               "properties": {"location": "https://example.com"}}  # fmt: skip
    same = normalize_event(inbound, RULES, new_id)
    assert isinstance(same, Normalized)
    assert out.key == same.key == "contact:380501234567"


def test_custom_event_params_pass_through() -> None:
    got = sent(body("Wishlist", ("items", "[1,2]"), ("n", 3)))
    assert got["params"][1:] == [{"name": "items", "value": "[1,2]"}, {"name": "n", "value": "3"}]


INVALID: list[Any] = [
    pytest.param("x", "", "JSON object", id="not-an-object"),
    pytest.param(
        body("pageViewed", PAGE, eventType="x"),
        "eventType",
        "did you mean 'eventTypeKey'",
        id="unknown-key",
    ),
    pytest.param(
        body("pageViewed", PAGE, eventTypeKey=None), "eventTypeKey", "required", id="type-missing"
    ),
    pytest.param(
        body("pageViewed", PAGE, eventTypeKey="a?b"), "eventTypeKey", "'?'", id="type-forbidden"
    ),
    pytest.param(
        body("pageViewed", PAGE, keyValue="k" * 301), "keyValue", "300", id="key-value-over-300"
    ),
    pytest.param(body("pageViewed", PAGE, keyValue=""), "keyValue", "empty", id="key-value-empty"),
    pytest.param(body("pageViewed", PAGE, keyValue=5), "keyValue", "string", id="key-value-number"),
    pytest.param(
        body("pageViewed", PAGE, params={"a": 1}), "params", "array", id="params-not-array"
    ),
    pytest.param(
        body("pageViewed", PAGE, ["title", "x"]), "params[2]", "object", id="param-not-object"
    ),
    pytest.param(
        body("pageViewed", PAGE, {"value": 1}), "params[2].name", "string", id="param-no-name"
    ),
    pytest.param(
        body("pageViewed", PAGE, {"name": "title"}), "params.title", "no value", id="param-no-value"
    ),
    pytest.param(
        body("pageViewed", PAGE, {"name": "title", "value": "T", "valeu": 1}),
        "params.title",
        "valeu",
        id="param-unknown-key",
    ),
    pytest.param(
        body("pageViewed", PAGE, ("title", "a"), ("title", "b")),
        "params.title",
        "twice",
        id="param-twice",
    ),
    pytest.param(
        body("pageViewed", PAGE, ("UserEmail", "b@c.de")),
        "params.UserEmail",
        "again",
        id="two-emails",
    ),
    pytest.param(
        body(
            "pageViewed",
            PAGE,
            params=[{"name": "email", "value": "bad"}, {"name": "page", "value": PAGE[1]}],
        ),
        "params.email",
        "email address",
        id="bad-email",
    ),
    pytest.param(
        body(
            "pageViewed",
            PAGE,
            params=[{"name": "Phone", "value": "call me"}, {"name": "page", "value": PAGE[1]}],
        ),
        "params.Phone",
        "phone",
        id="bad-phone",
    ),
    pytest.param(
        body("pageViewed", PAGE, params=[{"name": "page", "value": PAGE[1]}]),
        "params",
        "drops",
        id="no-contact",
    ),
    pytest.param(body("pageViewed"), "params.page.location", "required", id="page-missing"),
    pytest.param(
        body("pageViewed", ("page", '{"location":')),
        "params.page",
        "not valid JSON",
        id="page-invalid-json",
    ),
    pytest.param(
        body("pageViewed", ("page", "[1]")), "params.page", "JSON object", id="page-array"
    ),
    pytest.param(
        body("pageViewed", ("page", '{"location":"https://a.b","title":"t"}')),
        "params.page.title",
        "holds only location",
        id="page-extra-key",
    ),
    pytest.param(
        body("pageViewed", ("page", '{"location":"a.b"}')),
        "params.page.location",
        "absolute URL",
        id="page-location-relative",
    ),
    pytest.param(
        body("productViewed", ("product", '{"price":1}')),
        "params.product.productId",
        "required",
        id="product-id-missing",
    ),
    pytest.param(
        body("productViewed", ("product", '{"productId":"P","price":true}')),
        "params.product.price",
        "number",
        id="product-price-bool",
    ),
    pytest.param(
        body("productCategoryViewed", ("category", "{}")),
        "params.category.productCategoryId",
        "required",
        id="category-id-missing",
    ),
    pytest.param(
        body("cartUpdated", ("products", "[{")),
        "params.products",
        "not valid JSON",
        id="products-invalid-json",
    ),
    pytest.param(
        body("cartUpdated", ("products", '[{"productId":"P","quantity":1}]')),
        "params.products[0].price",
        "required",
        id="cart-price-missing",
    ),
    pytest.param(
        body("orderCreated", *ORDER, ("items", "[{]")),
        "params.items",
        "not valid JSON",
        id="items-invalid-json",
    ),
    pytest.param(
        body("orderCreated", *ORDER, ("items", orjson.dumps([{**ITEM, "cost": "x"}]).decode())),
        "params.items[0].cost",
        "number",
        id="item-cost-bad",
    ),
    pytest.param(
        body("orderCreated", *ORDER[1:]),
        "params.externalOrderId",
        "required",
        id="order-id-missing",
    ),
    pytest.param(
        body("orderCreated", *ORDER, ("items", [{**ITEM, "cost": 1}])),
        "params.totalCost",
        "add up",
        id="items-dont-add-up",
    ),
    pytest.param(
        {
            "eventTypeKey": "orderCreated",
            "params": [
                {"name": "contactId", "value": "c"},
                *({"name": n, "value": v} for n, v in ORDER),
            ],
        },
        "params",
        "externalCustomerId",
        id="order-only-contact-id",
    ),
    pytest.param(body("Wishlist", ("blob", "x" * 20_000)), "params", "20,000", id="body-too-big"),
    # A property given both inside a packed param and as a param of its own is an error
    # whichever comes first, and the message names the other copy.
    pytest.param(
        body("productViewed", ("product", '{"productId":"A","price":1}'), ("price", "2")),
        "params.price",
        "also as params.product.price",
        id="product-price-twice-after",
    ),
    pytest.param(
        body("productViewed", ("price", "2"), ("product", '{"productId":"A","price":1}')),
        "params.price",
        "also as params.product.price",
        id="product-price-twice-before",
    ),
    pytest.param(
        body("productViewed", ("color", "red"), ("product", PRODUCT_RED)),
        "params.color",
        "also as params.product.color",
        id="product-extra-twice-before",
    ),
    pytest.param(
        body("pageViewed", ("location", "https://y.example"), PAGE),
        "params.page.location",
        "also as params.location",
        id="page-location-twice-before",
    ),
    pytest.param(
        body("productCategoryViewed", ("productCategoryId", "b"), CATEGORY),
        "params.category.productCategoryId",
        "also as params.productCategoryId",
        id="category-id-twice-before",
    ),
]


@pytest.mark.parametrize(("raw", "field", "word"), INVALID)
def test_invalid_yespo_event_is_reported_in_the_senders_vocabulary(
    raw: object, field: str, word: str
) -> None:
    found = errors(raw)
    assert [e.field for e in found] == [field], found
    assert word in found[0].message, found[0].message
