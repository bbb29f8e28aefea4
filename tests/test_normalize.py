"""normalize_event: the inbound form, each type's params, and every way an event can be wrong."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from collector.errors import FieldError
from collector.normalize import MAX_BODY_BYTES, Normalized, Rules, normalize_event

RULES = Rules()
CONTACT = {"email": "example@email.com"}
ITEM = {
    "externalItemId": "200600",
    "name": "Super Device",
    "quantity": 1,
    "cost": 990,
    "url": "http://example.com/item/200600",
    "imageUrl": "http://example.com/item/200600/image.png",
}
VALID_PROPERTIES: dict[str, dict[str, Any]] = {
    "pageViewed": {"location": "https://shop.example/"},
    "productViewed": {"productId": "P1", "price": 10},
    "productCategoryViewed": {"productCategoryId": "Mugs"},
    "cartUpdated": {"products": [{"productId": "P1", "quantity": 1, "price": 10}]},
    "orderCreated": {
        "externalOrderId": "O1",
        "totalCost": 990,
        "status": "INITIALIZED",
        "date": "2020-05-14T10:11:00",
        "items": [ITEM],
    },
    "orderUpdated": {"externalOrderId": "O1"},
    "orderDelivered": {"externalOrderId": "O1"},
    "orderCancelled": {"externalOrderId": "O1"},
    "signedUp": {},
}


def new_id() -> str:
    return "generated-id"


def event(event_type: str, props: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A valid event of the type, with `props` merged into its properties (None deletes)."""
    properties = {**VALID_PROPERTIES[event_type], **(props or {})}
    raw: dict[str, Any] = {
        "type": event_type,
        "contact": CONTACT,
        "properties": {k: v for k, v in properties.items() if v is not None},
    }
    for key, value in top.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def ok(raw: object, rules: Rules = RULES) -> Normalized:
    result = normalize_event(raw, rules, new_id)
    assert isinstance(result, Normalized), result
    return result


def params(raw: object, rules: Rules = RULES) -> dict[str, str]:
    body = orjson.loads(ok(raw, rules).body)
    return {p["name"]: p["value"] for p in body["params"]}


def errors(raw: object, rules: Rules = RULES) -> list[FieldError]:
    result = normalize_event(raw, rules, new_id)
    assert isinstance(result, list), result
    assert result, "an invalid event must have at least one error"
    return result


# --- valid events ---------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(VALID_PROPERTIES))
def test_every_type_has_a_valid_minimal_event(event_type: str) -> None:
    out = ok(event(event_type))
    body = orjson.loads(out.body)
    assert body["eventTypeKey"] == event_type == out.event_type
    assert body["keyValue"] == "example@email.com"
    assert body["params"][0] == {"name": "email", "value": "example@email.com"}
    assert all(isinstance(p["value"], str) for p in body["params"])
    assert out.kind == "event"


def test_contact_params_come_first_in_fixed_order_and_are_normalized() -> None:
    raw = event(
        "pageViewed",
        contact={
            "pushToken": "tok",
            "contactKey": "k1",
            "contactId": 42,
            "externalCustomerId": 7,
            "phone": "+38 (050) 123-45-67",
            "email": "  John.Smith@Example.COM ",
        },
    )
    body = orjson.loads(ok(raw).body)
    assert body["keyValue"] == "john.smith@example.com"
    assert body["params"][:6] == [
        {"name": "email", "value": "john.smith@example.com"},
        {"name": "phone", "value": "380501234567"},
        {"name": "externalCustomerId", "value": "7"},
        {"name": "contactId", "value": "42"},
        {"name": "contactKey", "value": "k1"},
        {"name": "pushToken", "value": "tok"},
    ]


def test_a_phone_with_the_international_call_prefix_is_written_without_it() -> None:
    out = ok(event("pageViewed", contact={"phone": "00 380 50 123 45 67"}))
    assert orjson.loads(out.body)["keyValue"] == "380501234567"


def test_key_value_follows_rules_order_and_null_contact_fields_are_ignored() -> None:
    raw = event("pageViewed", contact={"email": None, "phone": "380501234567"})
    out = ok(raw)
    assert orjson.loads(out.body)["keyValue"] == "380501234567"
    assert out.key == "contact:380501234567"
    rules = Rules(key_value_order=("contactKey", "email"))
    raw = event("pageViewed", contact={"email": "a@b.co", "contactKey": "ck"})
    assert orjson.loads(ok(raw, rules).body)["keyValue"] == "ck"


def test_message_id_given_is_kept_and_marked_as_the_clients() -> None:
    calls: list[int] = []

    def counting_id() -> str:
        calls.append(1)
        return "generated"

    out = normalize_event(event("pageViewed", messageId="m-1"), RULES, counting_id)
    assert isinstance(out, Normalized)
    assert (out.message_id, out.client_id) == ("m-1", True)
    assert calls == []
    out = normalize_event(event("pageViewed"), RULES, counting_id)
    assert isinstance(out, Normalized)
    assert (out.message_id, out.client_id) == ("generated", False)


@pytest.mark.parametrize(
    ("timestamp", "ms"),
    [
        ("2020-05-14T10:11:00Z", 1589451060000),
        ("2020-05-14T10:11:00", 1589451060000),  # no zone: UTC
        ("2020-05-14T13:11:00+03:00", 1589451060000),
        ("2020-05-14T10:11:00.123456Z", 1589451060123),
        (1589451060000, 1589451060000),
        (1589451060000.9, 1589451060000),
        # the first and last moments of the window (2000 to 2099), in both forms
        ("2000-01-01T00:00:00Z", 946_684_800_000),
        (946_684_800_000, 946_684_800_000),
        ("2099-12-31T23:59:59.999Z", 4_102_444_799_999),
        (4_102_444_799_999, 4_102_444_799_999),
    ],
)
def test_timestamp_becomes_epoch_ms(timestamp: object, ms: int) -> None:
    assert ok(event("pageViewed", timestamp=timestamp)).event_time == ms


def test_no_timestamp_means_no_event_time() -> None:
    assert ok(event("pageViewed")).event_time is None


def test_context_and_anonymous_id_are_checked_but_not_sent() -> None:
    raw = event("pageViewed", context={"userAgent": "x"}, anonymousId="anon-1")
    assert set(params(raw)) == {"email", "page"}


def test_page_viewed_writes_page_and_passes_other_properties() -> None:
    raw = event("pageViewed", {"location": "myapp://cart", "title": "Cart", "n": 2})
    got = params(raw)
    assert orjson.loads(got["page"]) == {"location": "myapp://cart"}
    assert (got["title"], got["n"]) == ("Cart", "2")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("s", "s"),
        (990, "990"),
        (258.0, "258.0"),
        (45.5, "45.5"),
        (True, "true"),
        (False, "false"),
        ({"b": 1, "a": [1, "x"]}, '{"b":1,"a":[1,"x"]}'),  # sender's key order, compact
        ([1, 2], "[1,2]"),
    ],
)
def test_pass_through_values_are_stringified(value: object, text: str) -> None:
    assert params(event("signedUp", {"v": value}))["v"] == text


def test_null_property_is_left_out() -> None:
    assert "v" not in params(event("signedUp", {"v": None}))
    assert "title" not in params(event("pageViewed", {"title": None}))


def test_product_viewed_builds_the_product_object() -> None:
    raw = event(
        "productViewed",
        {
            "productId": 501,
            "price": "45.5",
            "isInStock": False,
            "quantity": 3,
            "currencyCode": "eur",
            "color": "green",
            "sizes": ["S", 1, True],
        },
    )
    got = params(raw)
    assert orjson.loads(got["product"]) == {
        "productId": "501",
        "price": 45.5,
        "isInStock": 0,
        "quantity": 3,
        "color": ["green"],
        "sizes": ["S", "1", "true"],
    }
    assert list(orjson.loads(got["product"])) == [
        "productId",
        "price",
        "isInStock",
        "quantity",
        "color",
        "sizes",
    ]
    assert got["currencyCode"] == "EUR"


def test_product_category_viewed_writes_category() -> None:
    got = params(event("productCategoryViewed", {"productCategoryId": 12, "depth": 2}))
    assert orjson.loads(got["category"]) == {"productCategoryId": "12"}
    assert got["depth"] == "2"


def test_cart_updated_keeps_arrays_of_scalars_and_stringifies_deeper_values() -> None:
    product = {
        "productId": "P1",
        "quantity": "2",
        "price": 45.5,
        "name": "Mug",
        "discount": "5%",
        "tags": ["a", 1],
        "meta": {"k": [1]},
        "none": None,
    }
    got = params(event("cartUpdated", {"products": [product], "currencyCode": "usd"}))
    assert orjson.loads(got["products"]) == [
        {
            "productId": "P1",
            "quantity": 2,
            "price": 45.5,
            "name": "Mug",
            "discount": "5%",
            "tags": ["a", "1"],
            "meta": '{"k":[1]}',
        }
    ]
    assert got["currencyCode"] == "USD"


def test_cart_updated_may_be_emptied() -> None:
    assert params(event("cartUpdated", {"products": []}))["products"] == "[]"


def test_cart_recycle_state_id_is_derived_from_the_message_id_when_absent() -> None:
    got = params(event("cartUpdated", messageId="cart-1"))
    assert got["recycleStateId"] == hashlib.sha1(b"cart-1").hexdigest()[:32]
    assert params(event("cartUpdated", messageId="cart-1")) == got  # a retry keeps it
    got = params(event("cartUpdated", {"recycleStateId": "abc-123"}))
    assert got["recycleStateId"] == "abc-123"


def test_custom_event_passes_properties_and_flattens_items_to_two_levels() -> None:
    raw = event(
        "signedUp",
        {"items": [{"id": 1, "tags": ["a"], "meta": {"k": 1}}], "note": "x"},
        type="Wishlist_Added",
    )
    got = params(raw)
    assert orjson.loads(got["items"]) == [{"id": 1, "tags": '["a"]', "meta": '{"k":1}'}]
    assert got["note"] == "x"


def test_custom_event_may_omit_properties() -> None:
    assert params(event("signedUp", properties=None)) == {"email": "example@email.com"}
    assert params({"type": "signedUp", "contact": CONTACT, "properties": None})


def test_type_names_are_case_sensitive() -> None:
    # `PageViewed` is not Yespo's pageViewed: it is a custom event with its properties as is.
    got = params(event("signedUp", {"location": "https://x.example"}, type="PageViewed"))
    assert got["location"] == "https://x.example"
    assert "page" not in got


def test_custom_identifying_rules() -> None:
    raw = event("signedUp", contact={"externalCustomerId": "c1"})
    rules = Rules(identifying=("externalCustomerId",))
    assert ok(raw, rules).key == "contact:c1"
    assert [e.field for e in errors(raw)] == ["contact"]


def test_empty_identifying_rules_turn_the_contact_check_off() -> None:
    raw = event("signedUp", contact={"externalCustomerId": "c1"})
    assert ok(raw, Rules(identifying=())).key == "contact:c1"
    raw = event("signedUp", contact={})
    (error,) = errors(raw, Rules(identifying=()))
    assert (error.field, "no keyValue" in error.message) == ("contact", True)


def test_order_event_key_is_the_order() -> None:
    out = ok(event("orderDelivered", {"externalOrderId": 77}))
    assert out.key == "order:77"
    assert params(event("orderDelivered", {"externalOrderId": 77}))["externalOrderId"] == "77"


def test_body_just_under_the_limit_passes() -> None:
    overhead = len(ok(event("signedUp", {"blob": ""})).body)
    raw = event("signedUp", {"blob": "x" * (MAX_BODY_BYTES - overhead)})
    assert len(ok(raw).body) == MAX_BODY_BYTES


# --- invalid events -------------------------------------------------------------------------


def contact(**fields: Any) -> dict[str, Any]:
    return {"contact": fields}


INVALID: list[Any] = [
    # the envelope
    pytest.param([], "", "JSON object", id="not-an-object"),
    pytest.param(
        event("pageViewed", propertes={}),
        "propertes",
        "did you mean 'properties'",
        id="unknown-top-level-key",
    ),
    pytest.param(event("pageViewed", type=None), "type", "required", id="type-missing"),
    pytest.param(event("pageViewed", type=5), "type", "string", id="type-not-string"),
    pytest.param(event("signedUp", type=""), "type", "empty", id="type-empty"),
    pytest.param(event("signedUp", type="sign/up"), "type", "'/'", id="type-forbidden-char"),
    pytest.param(event("signedUp", type="sign up"), "type", "' '", id="type-space"),
    pytest.param(event("signedUp", type="sign\x01up"), "type", "control", id="type-control-char"),
    pytest.param(event("signedUp", type="x" * 101), "type", "100 characters", id="type-101-chars"),
    pytest.param(
        event("pageViewed", messageId="a b"), "messageId", "spaces", id="message-id-space"
    ),
    pytest.param(
        event("pageViewed", messageId="x" * 129), "messageId", "128", id="message-id-long"
    ),
    pytest.param(event("pageViewed", messageId=5), "messageId", "string", id="message-id-number"),
    pytest.param(
        event("pageViewed", timestamp="yesterday"), "timestamp", "ISO 8601", id="timestamp-text"
    ),
    pytest.param(
        event("pageViewed", timestamp=1589451060), "timestamp", "seconds", id="timestamp-seconds"
    ),
    pytest.param(event("pageViewed", timestamp=True), "timestamp", "ISO 8601", id="timestamp-bool"),
    pytest.param(
        event("pageViewed", timestamp="1999-12-31T00:00:00Z"),
        "timestamp",
        "2000",
        id="timestamp-old",
    ),
    pytest.param(
        event("pageViewed", timestamp="2100-01-02"), "timestamp", "2100", id="timestamp-future"
    ),
    pytest.param(event("pageViewed", context="x"), "context", "object", id="context-not-object"),
    pytest.param(
        event("pageViewed", anonymousId="x" * 201), "anonymousId", "200", id="anonymous-id-long"
    ),
    pytest.param(
        event("pageViewed", properties="x"), "properties", "object", id="properties-not-object"
    ),
    pytest.param(
        event("pageViewed", properties=None),
        "properties.location",
        "required",
        id="properties-absent",
    ),
    # the contact
    pytest.param(event("pageViewed", contact=None), "contact", "drops", id="contact-missing"),
    pytest.param(
        event("pageViewed", contact={}),
        "contact",
        "email, phone, contactId, contactKey or pushToken",
        id="contact-empty",
    ),
    pytest.param(
        event("pageViewed", contact="a@b.co"), "contact", "object", id="contact-not-object"
    ),
    pytest.param(
        event("pageViewed", **contact(mail="a@b.co")),
        "contact.mail",
        "email",
        id="contact-unknown-key",
    ),
    pytest.param(
        event("pageViewed", **contact(externalCustomerId="c1")),
        "contact",
        "drops",
        id="contact-only-external-id",
    ),
    pytest.param(
        event("orderUpdated", **contact(contactId="c1")),
        "contact",
        "externalCustomerId",
        id="order-contact-only-contact-id",
    ),
    pytest.param(
        event("pageViewed", **contact(email="not-an-email")),
        "contact.email",
        "email address",
        id="email-no-at",
    ),
    pytest.param(
        event("pageViewed", **contact(email="a@b")),
        "contact.email",
        "email address",
        id="email-no-dot",
    ),
    pytest.param(
        event("pageViewed", **contact(email="a b@c.de")),
        "contact.email",
        "email address",
        id="email-space",
    ),
    pytest.param(
        event("pageViewed", **contact(email="a@b@c.de")),
        "contact.email",
        "email address",
        id="email-two-ats",
    ),
    pytest.param(
        event("pageViewed", **contact(email="a@" + "b" * 250 + ".co")),
        "contact.email",
        "254",
        id="email-long",
    ),
    pytest.param(
        event("pageViewed", **contact(email=5)), "contact.email", "email", id="email-number"
    ),
    pytest.param(
        event("pageViewed", **contact(phone="+38 050 CALL-ME")),
        "contact.phone",
        "'C'",
        id="phone-letters",
    ),
    pytest.param(
        event("pageViewed", **contact(phone="050 123 45 67")),
        "contact.phone",
        "not a national one",
        id="phone-national",
    ),
    pytest.param(
        event("pageViewed", **contact(phone="+0501234567")),
        "contact.phone",
        "country code",
        id="phone-plus-zero",
    ),
    pytest.param(
        event("pageViewed", **contact(phone="123")), "contact.phone", "5 to 15", id="phone-short"
    ),
    pytest.param(
        event("pageViewed", **contact(phone="1" * 16)), "contact.phone", "5 to 15", id="phone-long"
    ),
    pytest.param(
        event("pageViewed", **contact(phone=True)), "contact.phone", "phone", id="phone-bool"
    ),
    pytest.param(
        event("pageViewed", **contact(contactKey="k" * 301)),
        "contact.contactKey",
        "300",
        id="contact-key-long",
    ),
    pytest.param(
        event("pageViewed", **contact(contactKey="")),
        "contact.contactKey",
        "empty",
        id="contact-key-empty",
    ),
    pytest.param(
        event("pageViewed", **contact(pushToken=5)),
        "contact.pushToken",
        "string",
        id="push-token-number",
    ),
    pytest.param(
        event("pageViewed", {"Email": "a@b.co"}),
        "properties.Email",
        "contact.email",
        id="identifier-in-properties",
    ),
    pytest.param(
        event("signedUp", {"SMS": "380501234567"}),
        "properties.SMS",
        "contact.phone",
        id="sms-in-properties",
    ),
    pytest.param(
        event("signedUp", {"contact_key": "k"}),
        "properties.contact_key",
        "contact.contactKey",
        id="contact-key-in-properties",
    ),
    pytest.param(
        event("orderUpdated", {"externalCustomerId": "c"}),
        "properties.externalCustomerId",
        "contact.externalCustomerId",
        id="external-id-in-properties",
    ),
    # pageViewed
    pytest.param(
        event("pageViewed", {"location": None}),
        "properties.location",
        "required",
        id="page-location-missing",
    ),
    pytest.param(
        event("pageViewed", {"location": ""}),
        "properties.location",
        "empty",
        id="page-location-empty",
    ),
    pytest.param(
        event("pageViewed", {"location": 5}),
        "properties.location",
        "string",
        id="page-location-number",
    ),
    pytest.param(
        event("pageViewed", {"location": "shop.example/cart"}),
        "properties.location",
        "absolute URL",
        id="page-location-relative",
    ),
    pytest.param(
        event("pageViewed", {"location": "https://x.example/" + "a" * 2048}),
        "properties.location",
        "2048",
        id="page-location-long",
    ),
    pytest.param(
        event("pageViewed", {"page": "x"}), "properties.page", "reserved", id="page-reserved"
    ),
    # productViewed
    pytest.param(
        event("productViewed", {"productId": None}),
        "properties.productId",
        "required",
        id="product-id-missing",
    ),
    pytest.param(
        event("productViewed", {"price": None}),
        "properties.price",
        "required",
        id="product-price-missing",
    ),
    pytest.param(
        event("productViewed", {"productId": 1.5}),
        "properties.productId",
        "string or an integer",
        id="product-id-float",
    ),
    pytest.param(
        event("productViewed", {"price": True}),
        "properties.price",
        "number",
        id="product-price-bool",
    ),
    pytest.param(
        event("productViewed", {"price": "cheap"}),
        "properties.price",
        "number",
        id="product-price-text",
    ),
    pytest.param(
        event("productViewed", {"price": -1}),
        "properties.price",
        ">= 0",
        id="product-price-negative",
    ),
    pytest.param(
        event("productViewed", {"price": float("nan")}),
        "properties.price",
        "number",
        id="product-price-nan",
    ),
    pytest.param(
        event("productViewed", {"isInStock": 2}),
        "properties.isInStock",
        "0 or 1",
        id="product-in-stock-2",
    ),
    pytest.param(
        event("productViewed", {"isInStock": "yes"}),
        "properties.isInStock",
        "0 or 1",
        id="product-in-stock-text",
    ),
    pytest.param(
        event("productViewed", {"quantity": False}),
        "properties.quantity",
        "number",
        id="product-quantity-bool",
    ),
    pytest.param(
        event("productViewed", {"currencyCode": "dollars"}),
        "properties.currencyCode",
        "three-letter",
        id="product-currency",
    ),
    pytest.param(
        event("productViewed", {"color": {"a": 1}}),
        "properties.color",
        "array of strings",
        id="product-extra-object",
    ),
    pytest.param(
        event("productViewed", {"sizes": [["S"]]}),
        "properties.sizes",
        "array of strings",
        id="product-extra-nested-array",
    ),
    # productCategoryViewed
    pytest.param(
        event("productCategoryViewed", {"productCategoryId": None}),
        "properties.productCategoryId",
        "required",
        id="category-id-missing",
    ),
    pytest.param(
        event("productCategoryViewed", {"productCategoryId": [1]}),
        "properties.productCategoryId",
        "string",
        id="category-id-array",
    ),
    # cartUpdated
    pytest.param(
        event("cartUpdated", {"products": None}),
        "properties.products",
        "required",
        id="cart-products-missing",
    ),
    pytest.param(
        event("cartUpdated", {"products": {"productId": "P"}}),
        "properties.products",
        "array",
        id="cart-products-object",
    ),
    pytest.param(
        event("cartUpdated", {"products": ["P1"]}),
        "properties.products[0]",
        "object",
        id="cart-product-not-object",
    ),
    pytest.param(
        event("cartUpdated", {"products": [{"quantity": 1, "price": 1}]}),
        "properties.products[0].productId",
        "required",
        id="cart-product-id-missing",
    ),
    pytest.param(
        event("cartUpdated", {"products": [{"productId": "P", "price": 1}]}),
        "properties.products[0].quantity",
        "required",
        id="cart-quantity-missing",
    ),
    pytest.param(
        event("cartUpdated", {"products": [{"productId": "P", "quantity": 1}]}),
        "properties.products[0].price",
        "required",
        id="cart-price-missing",
    ),
    pytest.param(
        event("cartUpdated", {"products": [{"productId": "P", "quantity": 0, "price": 1}]}),
        "properties.products[0].quantity",
        "greater than 0",
        id="cart-quantity-zero",
    ),
    pytest.param(
        event("cartUpdated", {"products": [{"productId": "P", "quantity": 1, "price": True}]}),
        "properties.products[0].price",
        "number",
        id="cart-price-bool",
    ),
    pytest.param(
        event("cartUpdated", {"recycleStateId": "bad id!"}),
        "properties.recycleStateId",
        "Latin letters",
        id="cart-recycle-bad",
    ),
    pytest.param(
        event("cartUpdated", {"recycleStateId": "a" * 101}),
        "properties.recycleStateId",
        "100",
        id="cart-recycle-long",
    ),
    # orders
    pytest.param(
        event("orderCreated", {"externalOrderId": None}),
        "properties.externalOrderId",
        "required",
        id="order-id-missing",
    ),
    pytest.param(
        event("orderCreated", {"totalCost": None, "items": None}),
        "properties.totalCost",
        "required",
        id="order-total-missing",
    ),
    pytest.param(
        event("orderCreated", {"status": None}),
        "properties.status",
        "required",
        id="order-status-missing",
    ),
    pytest.param(
        event("orderCreated", {"date": None}),
        "properties.date",
        "required",
        id="order-date-missing",
    ),
    pytest.param(
        event("orderUpdated", {"externalOrderId": None}),
        "properties.externalOrderId",
        "required",
        id="order-updated-id-missing",
    ),
    pytest.param(
        event("orderDelivered", {"externalOrderId": None}),
        "properties.externalOrderId",
        "required",
        id="order-delivered-id-missing",
    ),
    pytest.param(
        event("orderCancelled", {"externalOrderId": None}),
        "properties.externalOrderId",
        "required",
        id="order-cancelled-id-missing",
    ),
    pytest.param(
        event("orderCreated", {"externalOrderId": "x" * 101}),
        "properties.externalOrderId",
        "100",
        id="order-id-long",
    ),
    pytest.param(
        event("orderCreated", {"status": "SHIPPED"}),
        "properties.status",
        "must be one of INITIALIZED, IN_PROGRESS, DELIVERED, CANCELLED, ABANDONED_SHOPPING_CART, got 'SHIPPED'",
        id="order-status-bad",
    ),
    pytest.param(
        event("orderUpdated", {"status": "done"}),
        "properties.status",
        "must be one of",
        id="order-updated-status-bad",
    ),
    pytest.param(
        event("orderCreated", {"date": "14/05/2020"}),
        "properties.date",
        "ISO 8601",
        id="order-date-text",
    ),
    pytest.param(
        event("orderCreated", {"date": "2020-13-01"}),
        "properties.date",
        "ISO 8601",
        id="order-date-month-13",
    ),
    pytest.param(
        event("orderCreated", {"date": 1589451060}),
        "properties.date",
        "seconds",
        id="order-date-seconds",
    ),
    pytest.param(
        event("orderCreated", {"date": True}), "properties.date", "ISO 8601", id="order-date-bool"
    ),
    pytest.param(
        event("orderCancelled", {"date": "soon"}),
        "properties.date",
        "ISO 8601",
        id="order-cancelled-date-bad",
    ),
    pytest.param(
        event("orderCreated", {"totalCost": True}),
        "properties.totalCost",
        "number",
        id="order-total-bool",
    ),
    pytest.param(
        event("orderCreated", {"totalCost": "258,0"}),
        "properties.totalCost",
        "number",
        id="order-total-comma",
    ),
    pytest.param(
        event("orderCreated", {"currency": "hryvnia"}),
        "properties.currency",
        "three-letter",
        id="order-currency",
    ),
    pytest.param(
        event("orderCreated", {"items": {"a": 1}}),
        "properties.items",
        "array",
        id="order-items-object",
    ),
    pytest.param(
        event("orderCreated", {"items": [5]}),
        "properties.items[0]",
        "object",
        id="order-item-not-object",
    ),
    *[
        pytest.param(
            event("orderCreated", {"items": [{**ITEM, field: None}]}),
            f"properties.items[0].{field}",
            "required",
            id=f"order-item-{field}-missing",
        )
        for field in ITEM
    ],
    pytest.param(
        event("orderCreated", {"items": [{**ITEM, "cost": "abc"}]}),
        "properties.items[0].cost",
        "number",
        id="order-item-cost-text",
    ),
    pytest.param(
        event("orderCreated", {"items": [{**ITEM, "quantity": 0}]}),
        "properties.items[0].quantity",
        "greater than 0",
        id="order-item-quantity-zero",
    ),
    pytest.param(
        event("orderCreated", {"items": [{**ITEM, "quantity": True}]}),
        "properties.items[0].quantity",
        "number",
        id="order-item-quantity-bool",
    ),
    pytest.param(
        event("orderCreated", {"items": [{**ITEM, "url": 5}]}),
        "properties.items[0].url",
        "string",
        id="order-item-url-number",
    ),
    pytest.param(
        event("orderCreated", {"totalCost": 1000}),
        "properties.totalCost",
        "items add up to 990 (+ shipping 0), totalCost is 1000",
        id="order-items-dont-add-up",
    ),
    pytest.param(
        event("orderCreated", {"shipping": 5}),
        "properties.totalCost",
        "(+ shipping 5)",
        id="order-items-plus-shipping-dont-add-up",
    ),
    pytest.param(
        event("orderUpdated", {"totalCost": 1, "items": [ITEM]}),
        "properties.totalCost",
        "add up",
        id="order-updated-items-dont-add-up",
    ),
    # size
    pytest.param(
        event("signedUp", {"blob": "x" * MAX_BODY_BYTES}),
        "properties",
        "20,000",
        id="body-over-20000-bytes",
    ),
    pytest.param(
        event("signedUp", {"a": "é" * 6000, "b": "é" * 6000}),
        "properties",
        "bytes",
        id="body-over-limit-in-utf8",
    ),
]


@pytest.mark.parametrize(("raw", "field", "word"), INVALID)
def test_invalid_event_is_reported_at_its_field(raw: object, field: str, word: str) -> None:
    found = errors(raw)
    assert [e.field for e in found] == [field], found
    assert word in found[0].message, found[0].message


def test_all_problems_are_reported_at_once() -> None:
    raw = {
        "type": "orderCreated",
        "messageId": "has space",
        "timestamp": "nope",
        "contact": {"email": "bad", "contactId": "c"},
        "properties": {
            "totalCost": "x",
            "status": "SHIPPED",
            "items": [{"name": "n"}],
            "Phone": "1",
        },
        "extra": 1,
    }
    assert sorted(e.field for e in errors(raw)) == sorted(
        [
            "extra",
            "messageId",
            "timestamp",
            "contact.email",
            "properties.Phone",
            "properties.externalOrderId",
            "properties.totalCost",
            "properties.status",
            "properties.date",
            "properties.items[0].externalItemId",
            "properties.items[0].quantity",
            "properties.items[0].cost",
            "properties.items[0].url",
            "properties.items[0].imageUrl",
        ]
    )


def test_invalid_email_is_not_also_reported_as_no_contact() -> None:
    assert [e.field for e in errors(event("pageViewed", contact={"email": "x"}))] == [
        "contact.email"
    ]


def test_error_message_says_why_for_no_contact() -> None:
    (error,) = errors(event("pageViewed", contact={}))
    assert "Yespo drops" in error.message
    for name in ("email", "phone", "contactId", "contactKey", "pushToken"):
        assert name in error.message
