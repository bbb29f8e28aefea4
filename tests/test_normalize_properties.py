"""Properties of normalization over inputs hypothesis makes up (test_normalize_fuzz.py puts a
table of odd values at known positions; this explores shapes and combinations instead).

For any JSON value, each entry point returns a result or precise errors and never raises;
a result's params are strings and its body is within Yespo's 20 KB; an event normalized
once, given again in Yespo's form, comes out the same; and the structs `/v1/events` decodes
normalize as the same JSON read by orjson does.

Deterministic: `derandomize` draws the same examples on every run and no example database
is kept, so CI never meets an example a developer's run did not.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.errors import FieldError
from collector.normalize import (
    MAX_BODY_BYTES,
    Normalized,
    Rules,
    normalize_event,
    normalize_inbound,
    normalize_order,
    normalize_yespo_event,
)
from collector.normalize.contact import CONTACT_FIELDS
from collector.normalize.event_types import PACKED
from collector.normalize.inbound import Event, decode
from collector.normalize.orders import STATUSES

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RULES = st.sampled_from(
    [
        Rules(),
        Rules(check_order_total=False, identifying=("email",), key_value_order=("phone", "email")),
    ]
)


def new_id() -> str:
    return "generated-id"


# --- values -------------------------------------------------------------------------------

# Integers as orjson reads them (past 64 bits it reads a float); floats JSON can carry.
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
# Text past the sizes that matter (an id's 100, a URL's 2,048, an event's 20,000 bytes).
LONG = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["x", "é", "🙂", "\\", '"']),
    st.sampled_from([99, 101, 300, 2_049, 6_000, 19_900, 21_000]),
)
TEXT = st.text(max_size=20) | LONG
LEAVES = st.none() | st.booleans() | INTS | FLOATS | TEXT
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

IDS = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True) | st.integers(0, 10**6)
AMOUNTS = (
    st.integers(0, 10**6)
    | st.decimals(0, 10**6, places=2, allow_nan=False).map(float)
    | st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,2})?", fullmatch=True)
)
URLS = st.sampled_from(["https://shop.example/", "http://x.example/a?b=1", "myapp://cart"]) | (
    st.text(max_size=30).map(lambda path: "https://shop.example/" + path)
)
DATES = st.datetimes(datetime.datetime(2000, 1, 2), datetime.datetime(2099, 12, 30)).map(
    lambda d: d.isoformat(timespec="seconds")
) | st.sampled_from(["2026-11-23", "2026-11-23T10:00:00+02:00"])
EMAILS = st.emails() | st.sampled_from(["Jane@Example.com ", "a@b.co"])
PHONES = st.from_regex(r"\+?[1-9][0-9]{4,13}", fullmatch=True) | st.just("+38 (050) 123-45-67")


class Shapes:
    """Strategies for the parts of events and orders: `clean` ones draw only values of the
    right kind (so that many events are valid and the properties about valid events say
    something), the others put any JSON value, or a near miss, in any place now and then."""

    def __init__(self, clean: bool) -> None:
        self.clean = clean

    def of(self, good: st.SearchStrategy[Any], *near: Any) -> st.SearchStrategy[Any]:
        if self.clean:
            return good
        misses = st.sampled_from(near) if near else LONG
        return st.one_of(good, good, good, misses, LONG, JSON)

    def more(self, fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        """`fields`, when an object and not clean, sometimes with more of any name and value."""
        if self.clean:
            return fields
        extra = st.dictionaries(st.text(max_size=10), JSON, max_size=2)
        return st.builds(
            lambda known, more: {**more, **known} if isinstance(known, dict) else known,
            fields,
            st.just({}) | extra,
        )

    def contact(self) -> st.SearchStrategy[dict[str, Any]]:
        ids = self.of(IDS.map(str), "", " ", -1, 1.5)
        optional = {
            "phone": self.of(PHONES, "12", "phone"),
            "externalCustomerId": ids,
            "contactId": ids,
            "contactKey": ids,
            "pushToken": ids,
        }
        if self.clean:
            return st.fixed_dictionaries({"email": EMAILS}, optional=optional)
        return st.fixed_dictionaries(
            {}, optional={"email": self.of(EMAILS, "a@b", "@x.example"), **optional}
        )

    def items(self) -> st.SearchStrategy[list[Any]]:
        item = st.fixed_dictionaries(
            {
                "externalItemId": self.of(IDS, ""),
                "name": self.of(st.text(min_size=1, max_size=20).filter(str.strip), " "),
                "quantity": self.of(st.integers(1, 5), 0, -1),
                "cost": self.of(st.integers(0, 1000), -1, "x"),
                "url": self.of(URLS, ""),
                "imageUrl": self.of(URLS, ""),
            }
        )
        return st.lists(self.more(item), max_size=4)

    def order(self) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                "externalOrderId": self.of(IDS, "", "x" * 101),
                "status": self.of(st.sampled_from(STATUSES), "delivered", "LOST"),
                "date": self.of(DATES, "2026-13-01", "yesterday", "1999-01-01"),
            },
            optional={
                "currency": self.of(st.sampled_from(["USD", "uah"]), "XX"),
                "items": self.of(self.items()),
                "shipping": self.of(st.integers(0, 50), -1),
                # Clean orders add up: _total writes the sum of their items.
                **({} if self.clean else {"totalCost": self.of(AMOUNTS, -1, "cheap")}),
            },
        ).map(_total)

    def properties(self, event_type: object) -> st.SearchStrategy[Any]:
        of = self.of
        if event_type == "pageViewed":
            shape = st.fixed_dictionaries(
                {"location": of(URLS, "/relative", "")}, optional={"title": TEXT}
            )
        elif event_type == "productViewed":
            shape = st.fixed_dictionaries(
                {"productId": of(IDS, ""), "price": of(AMOUNTS, -1, "free")},
                optional={
                    "isInStock": of(st.sampled_from([True, False, 0, 1]), 2, "yes"),
                    "quantity": of(AMOUNTS, -1),
                    "currencyCode": of(st.sampled_from(["USD", "eur"]), "US"),
                    "colour": of(st.lists(st.text(max_size=5), max_size=3), [{}]),
                },
            )
        elif event_type == "productCategoryViewed":
            shape = st.fixed_dictionaries({"productCategoryId": of(IDS, "")})
        elif event_type == "cartUpdated":
            product = st.fixed_dictionaries(
                {
                    "productId": of(IDS, ""),
                    "quantity": of(st.integers(1, 5), 0),
                    "price": of(AMOUNTS, -1),
                }
            )
            shape = st.fixed_dictionaries(
                {"products": of(st.lists(self.more(product), max_size=3))},
                optional={"currencyCode": of(st.sampled_from(["USD", "eur"]), "US")},
            )
        elif isinstance(event_type, str) and event_type.startswith("order"):
            shape = self.order()
        else:
            # A custom event's properties pass through; items keep two levels in Yespo.
            items = st.lists(st.dictionaries(st.text(max_size=5), JSON, max_size=3), max_size=3)
            shape = st.builds(
                lambda named, more: {**more, **named},
                st.fixed_dictionaries({}, optional={"items": items}),
                st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), JSON, max_size=4),
            )
        return of(self.more(shape))

    def events(self) -> st.SearchStrategy[dict[str, Any]]:
        @st.composite
        def draw_event(draw: st.DrawFn) -> dict[str, Any]:
            event_type = draw(self.of(TYPES, "", "bad type", "x" * 101))
            event = {"type": event_type, "contact": draw(self.of(self.contact()))}
            event["properties"] = draw(self.properties(event_type))
            optional = {
                "messageId": self.of(IDS.map(str), "has space", ""),
                "timestamp": self.of(st.integers(946_771_200_000, 4_102_444_799_000) | DATES, -1),
                "context": self.of(st.just({"page": {"url": "https://shop.example/"}}), []),
                "anonymousId": self.of(st.text(min_size=8, max_size=20), "x" * 201),
            }
            for name, strategy in optional.items():
                if draw(st.booleans()):
                    event[name] = draw(strategy)
            more: dict[str, Any] = draw(self.more(st.just(event)))
            return more

        return draw_event()


def _total(props: dict[str, Any]) -> dict[str, Any]:
    """Sets totalCost to what the items add up to, when it can, so that most orders pass."""
    try:
        total = sum(i["quantity"] * i["cost"] for i in props.get("items", []))
        props.setdefault("totalCost", total + props.get("shipping", 0))
    except (TypeError, KeyError):
        pass
    return props


TYPES = st.sampled_from([*sorted(PACKED), "signedUp", "wishlist_added", "a.b-c"])
CLEAN, MESSY = Shapes(clean=True), Shapes(clean=False)
EVENTS = CLEAN.events() | MESSY.events()

# Yespo-form bodies: params by the names Yespo reads (identifiers, packed, others).
# Param values: text, and JSON text as the packed params (page, product, items) carry.
VALUE_TEXTS = TEXT | EMAILS | st.builds(lambda v: orjson.dumps(v).decode(), JSON)

PARAM_NAMES = st.sampled_from(
    ["Email", "email", "Phone", "SMS", "ContactId", "externalCustomerId", "pushToken",
     *sorted(set(PACKED.values())), "currencyCode", "title", "note", "externalOrderId",
     "totalCost", "status", "date"]
) | st.text(max_size=10)  # fmt: skip
YESPO_EVENTS = MESSY.more(
    st.fixed_dictionaries(
        {
            "eventTypeKey": MESSY.of(TYPES),
            "params": MESSY.of(
                st.lists(
                    MESSY.more(
                        st.fixed_dictionaries(
                            {"name": MESSY.of(PARAM_NAMES), "value": MESSY.of(VALUE_TEXTS)}
                        )
                    ),
                    max_size=6,
                )
            ),
        },
        optional={"keyValue": MESSY.of(EMAILS | IDS), "messageId": MESSY.of(IDS)},
    )
)
ORDERS = st.one_of(
    *(
        shapes.more(
            st.builds(
                lambda props, contact: {**contact, **props},
                shapes.order(),
                st.fixed_dictionaries({"email": shapes.of(EMAILS)}, optional={
                    "externalCustomerId": shapes.of(IDS), "phone": shapes.of(PHONES)}),
            )
        )
        for shapes in (CLEAN, MESSY)
    )
)  # fmt: skip


# --- what every answer must be -----------------------------------------------------------------


def first_step(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def check(result: Normalized | list[FieldError], raw: object, known: tuple[str, ...]) -> None:
    """A body Yespo takes, or errors that each name a field of the input and say why."""
    if isinstance(result, Normalized):
        body = orjson.loads(result.body)
        if result.kind == "event":
            assert len(result.body) <= MAX_BODY_BYTES
            assert isinstance(body["keyValue"], str) and body["keyValue"]
            for param in body["params"]:
                assert set(param) == {"name", "value"}
                assert isinstance(param["name"], str) and param["name"]
                assert isinstance(param["value"], str), param
        else:
            assert result.kind == "order" and isinstance(body, dict)
        return
    assert isinstance(result, list) and result, "an invalid input must have at least one error"
    names = {str(k) for k in raw} if isinstance(raw, dict) else set()
    for error in result:
        assert isinstance(error, FieldError)
        assert isinstance(error.message, str) and error.message.strip()
        assert error.field in names or first_step(error.field) in {"", *known, *names}, error


EVENT_FIELDS = ("type", "messageId", "timestamp", "contact", "properties", "context", "anonymousId")
YESPO_FIELDS = ("eventTypeKey", "keyValue", "params", "messageId")
ORDER_FIELDS = (*CONTACT_FIELDS, "externalOrderId", "totalCost", "status", "date", "items")


# --- the properties ---------------------------------------------------------------------------


@PROPERTY
@given(raw=JSON | EVENTS | YESPO_EVENTS | ORDERS, rules=RULES)
def test_any_json_value_gets_a_result_or_precise_errors_from_every_entry_point(
    raw: object, rules: Rules
) -> None:
    check(normalize_event(raw, rules, new_id), raw, EVENT_FIELDS)
    check(normalize_yespo_event(raw, rules, new_id), raw, YESPO_FIELDS)
    check(normalize_order(raw, rules, new_id), raw, ORDER_FIELDS)


@PROPERTY
@given(raw=EVENTS, rules=RULES)
def test_an_event_gets_a_body_within_20kb_of_string_params_or_precise_errors(
    raw: dict[str, Any], rules: Rules
) -> None:
    check(normalize_event(raw, rules, new_id), raw, EVENT_FIELDS)


@PROPERTY
@given(raw=EVENTS, rules=RULES)
def test_a_normalized_event_given_again_in_yespo_form_comes_out_the_same(
    raw: dict[str, Any], rules: Rules
) -> None:
    first = normalize_event(raw, rules, new_id)
    if not isinstance(first, Normalized):
        return
    body = orjson.loads(first.body)
    if first.client_id:
        body["messageId"] = first.message_id
    again = normalize_yespo_event(body, rules, new_id)
    assert isinstance(again, Normalized), again
    assert again.body == first.body
    assert (again.message_id, again.key, again.event_type) == (
        first.message_id,
        first.key,
        first.event_type,
    )


@PROPERTY
@given(raw=YESPO_EVENTS, rules=RULES)
def test_a_yespo_form_event_normalizes_to_a_fixed_point(raw: dict[str, Any], rules: Rules) -> None:
    first = normalize_yespo_event(raw, rules, new_id)
    check(first, raw, YESPO_FIELDS)
    if isinstance(first, Normalized):
        again = normalize_yespo_event(orjson.loads(first.body), rules, new_id)
        assert isinstance(again, Normalized), again
        assert again.body == first.body


@PROPERTY
@given(raw=EVENTS, rules=RULES)
def test_the_decoded_structs_normalize_as_the_json_does(raw: dict[str, Any], rules: Rules) -> None:
    body = orjson.dumps(raw)
    decoded = decode(body)
    if not isinstance(decoded, Event):
        return  # not plainly an event: ingest reads it with orjson instead
    from_struct = normalize_inbound(decoded, rules, new_id)
    check(from_struct, raw, EVENT_FIELDS)
    assert from_struct == normalize_event(orjson.loads(body), rules, new_id)


@PROPERTY
@given(raw=ORDERS, rules=RULES)
def test_an_add_orders_order_gets_a_result_or_precise_errors(
    raw: dict[str, Any], rules: Rules
) -> None:
    check(normalize_order(raw, rules, new_id), raw, ORDER_FIELDS)


def test_the_strategies_reach_valid_events_of_every_type() -> None:
    # The properties above say little if nothing generated were valid: each type is.
    valid: set[str] = set()

    @PROPERTY
    @given(raw=CLEAN.events())
    def collect(raw: dict[str, Any]) -> None:
        result = normalize_event(raw, Rules(), new_id)
        if isinstance(result, Normalized):
            valid.add(result.event_type if result.event_type in PACKED else "custom")

    collect()
    assert valid == {*PACKED, "custom"}
