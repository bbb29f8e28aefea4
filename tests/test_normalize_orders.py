"""Orders: Add-orders objects (normalize_order) and the order fields of order events."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from collector.errors import FieldError
from collector.normalize import (
    Normalized,
    Rules,
    normalize_event,
    normalize_order,
    normalize_yespo_event,
)
from collector.normalize.routing import route

RULES = Rules()
KYIV = Rules(timezone=ZoneInfo("Europe/Kyiv"))
ITEM = {
    "externalItemId": "200600",
    "name": "Super Device",
    "quantity": 1,
    "cost": 990,
    "url": "http://example.com/item/200600",
    "imageUrl": "http://example.com/item/200600/image.png",
}
ORDER: dict[str, Any] = {
    "externalOrderId": "100500",
    "externalCustomerId": "12345",
    "totalCost": 1000,
    "status": "INITIALIZED",
    "date": "2017-03-08T09:30:00+02:00",
    "email": "john@example.com",
    "shipping": 10,
    "items": [ITEM],
}


def new_id() -> str:
    return "generated-id"


def order(**changes: Any) -> dict[str, Any]:
    out = {**ORDER, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def sent_order(raw: object, rules: Rules = RULES) -> dict[str, Any]:
    result = normalize_order(raw, rules, new_id)
    assert isinstance(result, Normalized), result
    body: dict[str, Any] = orjson.loads(result.body)
    return body


def order_errors(raw: object) -> list[FieldError]:
    result = normalize_order(raw, RULES, new_id)
    assert isinstance(result, list), result
    assert result
    return result


def order_event(rules: Rules = RULES, **props: Any) -> dict[str, str]:
    raw = {
        "type": "orderUpdated",
        "contact": {"externalCustomerId": "c1"},
        "properties": {"externalOrderId": "O1", **props},
    }
    result = normalize_event(raw, rules, new_id)
    assert isinstance(result, Normalized), result
    return {p["name"]: p["value"] for p in orjson.loads(result.body)["params"]}


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2017-03-08T09:30:00+02:00", "2017-03-08T07:30:00"),
        ("2020-05-14T10:11:00", "2020-05-14T10:11:00"),  # no zone: already local
        ("2020-05-14T10:11:00.987Z", "2020-05-14T10:11:00"),  # fraction dropped
        ("2020-05-14 10:11", "2020-05-14T10:11:00"),
        ("2020-05-14", "2020-05-14T00:00:00"),
        (1589451060000, "2020-05-14T10:11:00"),  # epoch milliseconds
        (946_684_800_000, "2000-01-01T00:00:00"),  # the window's first moment, both forms
        ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00"),
    ],
)
def test_order_date_is_written_as_yespo_wants_it(date: object, expected: str) -> None:
    assert order_event(date=date)["date"] == expected
    assert sent_order(order(date=date))["date"] == expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2020-05-14T10:11:00Z", "2020-05-14T13:11:00"),  # UTC+3 in summer
        ("2020-01-14T10:11:00Z", "2020-01-14T12:11:00"),  # UTC+2 in winter
        ("2020-05-14T10:11:00", "2020-05-14T10:11:00"),  # no zone: already Kyiv time
        (1589451060000, "2020-05-14T13:11:00"),
    ],
)
def test_order_date_in_the_configured_timezone(date: object, expected: str) -> None:
    assert order_event(KYIV, date=date)["date"] == expected
    assert sent_order(order(date=date), KYIV)["date"] == expected


def test_status_is_upper_cased_and_total_cost_kept_as_written() -> None:
    got = order_event(status="delivered", totalCost="258.0")
    assert (got["status"], got["totalCost"]) == ("DELIVERED", "258.0")
    assert order_event(totalCost=258.0)["totalCost"] == "258.0"
    assert order_event(totalCost=990)["totalCost"] == "990"


def test_order_event_items_are_flattened_to_two_levels() -> None:
    item = {**ITEM, "externalItemId": 200600, "specs": {"ram": 8}, "tags": ["new"], "note": None}
    got = order_event(items=[item], currency="uah", gift=True, products={"array": [ITEM]})
    assert orjson.loads(got["items"]) == [
        {**ITEM, "externalItemId": "200600", "specs": '{"ram":8}', "tags": '["new"]'}
    ]
    assert got["currency"] == "UAH"
    assert got["gift"] == "true"
    assert orjson.loads(got["products"]) == {"array": [ITEM]}


def test_items_add_up_within_a_cent_with_shipping() -> None:
    items = [{**ITEM, "quantity": 3, "cost": 0.1}, {**ITEM, "quantity": "2", "cost": "10.005"}]
    got = order_event(items=items, totalCost="20.31", shipping=0)
    assert got["totalCost"] == "20.31"
    order_event(items=items, totalCost=25.32, shipping="5")  # one cent off: accepted


def test_total_check_can_be_turned_off() -> None:
    got = order_event(Rules(check_order_total=False), items=[ITEM], totalCost=1)
    assert got["totalCost"] == "1"


def test_add_orders_object_keeps_its_shape_with_normalized_values() -> None:
    raw = order(
        externalOrderId=100500,
        totalCost="1000.00",
        status="in_progress",
        email=" John@Example.com",
        phone="+380 (94) 258-36-91",
        firstName="John",
        discount=None,
        items=[{**ITEM, "quantity": "1", "specs": {"ram": 8}}],
    )
    got = sent_order(raw)
    assert got == {
        "externalOrderId": "100500",
        "externalCustomerId": "12345",
        "totalCost": 1000.0,
        "status": "IN_PROGRESS",
        "date": "2017-03-08T07:30:00",
        "email": "john@example.com",
        "shipping": 10,
        "items": [{**ITEM, "quantity": 1, "specs": {"ram": 8}}],
        "phone": "380942583691",
        "firstName": "John",
    }


def test_add_orders_object_needs_only_email_or_phone() -> None:
    got = sent_order(order(email=..., phone="380942583691"))
    assert got["phone"] == "380942583691"
    assert "email" not in got
    assert "items" not in sent_order(order(items=..., totalCost=5))


ORDER_INVALID: list[Any] = [
    pytest.param(None, "", "JSON object", id="not-an-object"),
    *[
        pytest.param(order(**{field: ...}), field, "required", id=f"{field}-missing")
        for field in ("externalOrderId", "externalCustomerId", "totalCost", "status", "date")
    ],
    pytest.param(order(email=...), "email", "email or phone", id="no-email-or-phone"),
    pytest.param(order(email="[email protected]"), "email", "email address", id="email-bad"),
    pytest.param(order(phone="not a phone"), "phone", "phone", id="phone-bad"),
    pytest.param(order(status="SHIPPED"), "status", "INITIALIZED", id="status-bad"),
    pytest.param(order(date="08.03.2017"), "date", "ISO 8601", id="date-bad"),
    pytest.param(order(totalCost=True), "totalCost", "number", id="total-bool"),
    pytest.param(
        order(externalCustomerId=""), "externalCustomerId", "empty", id="customer-id-empty"
    ),
    pytest.param(
        order(items=[{**ITEM, "url": None}]), "items[0].url", "required", id="item-url-missing"
    ),
    pytest.param(
        order(items=[{**ITEM, "cost": -1}]), "items[0].cost", ">= 0", id="item-cost-negative"
    ),
    pytest.param(order(items="[]"), "items", "array", id="items-string"),
    pytest.param(
        order(shipping=0),
        "totalCost",
        "items add up to 990 (+ shipping 0), totalCost is 1000",
        id="total-without-shipping",
    ),
    pytest.param(
        order(totalCost="999.98"), "totalCost", "totalCost is 999.98", id="total-two-cents-off"
    ),
]


@pytest.mark.parametrize(("raw", "field", "word"), ORDER_INVALID)
def test_invalid_order_is_reported_at_its_field(raw: object, field: str, word: str) -> None:
    found = order_errors(raw)
    assert [e.field for e in found] == [field], found
    assert word in found[0].message, found[0].message


def test_order_total_within_a_cent_passes() -> None:
    assert sent_order(order(totalCost="999.99"))["totalCost"] == 999.99


# --- an order waits for its contact's events ------------------------------------------------


def normalized(result: Normalized | list[FieldError]) -> Normalized:
    assert isinstance(result, Normalized), result
    return result


def test_an_order_waits_for_the_key_its_contacts_events_have_in_every_form() -> None:
    page = {"location": "https://example.com/"}
    viewed = {"type": "pageViewed", "contact": {"email": " John@Example.com"}, "properties": page}
    view = normalized(normalize_event(viewed, RULES, new_id))
    assert (view.key, view.after) == ("contact:john@example.com", None)  # only orders wait
    props = {"externalOrderId": "100500", "totalCost": 1000, "status": "INITIALIZED"}
    contact = {"email": "JOHN@example.com", "externalCustomerId": "12345"}
    created = {
        "type": "orderCreated",
        "contact": contact,
        "properties": {**props, "date": "2020-05-14"},
    }
    event = normalized(normalize_event(created, RULES, new_id))
    params = [
        {"name": "Email", "value": "John@Example.com"},
        {"name": "date", "value": "2020-05-14"},
    ]
    params += [{"name": name, "value": value} for name, value in props.items()]
    as_yespo = {"eventTypeKey": "orderCreated", "keyValue": "12345", "params": params}
    yespo = normalized(normalize_yespo_event(as_yespo, RULES, new_id))
    add_order = normalized(normalize_order(order(email="John@Example.com "), RULES, new_id))
    [routed] = route(event, created, "orders", RULES)
    got = [(o.kind, o.key, o.after) for o in (event, yespo, add_order, routed)]
    assert got == [
        ("event", "order:100500", view.key),
        ("event", "order:100500", view.key),
        ("order", "order:100500", view.key),
        ("order", "order:100500", view.key),
    ]


def test_an_order_waits_for_its_contact_by_the_keyvalue_rule() -> None:
    by_phone = normalized(
        normalize_order(order(email=..., phone="+38 (050) 123-45-67"), RULES, new_id)
    )
    assert by_phone.after == "contact:380501234567"
    customer_first = Rules(key_value_order=("externalCustomerId", "email"))
    assert normalized(normalize_order(order(), customer_first, new_id)).after == "contact:12345"
