"""Segment's calls read and mapped (collector/normalize/segment.py) and remembered carts
(cart_state.py): pure, tested with tables."""

from __future__ import annotations

from typing import Any

import pytest

from collector.normalize.cart_state import MAX_CART_PRODUCTS, Cart, apply
from collector.normalize.segment import (
    Call,
    CartChange,
    Mapped,
    Refused,
    batch_sent_at,
    custom_type,
    event_time,
    map_call,
    read_call,
)

NOW = 1_700_000_000_000  # the collector's receipt time, epoch ms (2023-11-14T22:13:20Z)


def call(**fields: Any) -> Call:
    raw = {"type": "track", "userId": "u1", "messageId": "m1", **fields}
    out = read_call(raw, None, None, NOW)
    assert isinstance(out, Call), out
    return out


def track(event: str, **properties: Any) -> Call:
    return call(event=event, properties=properties)


# -- time ------------------------------------------------------------------------------------


def test_timestamp_is_corrected_for_the_senders_clock_from_sent_at() -> None:
    # The device's clock is 1 h fast: it made the call at its 10:00:00 and sent it at its
    # 10:00:30; we received it at 09:00:31 by ours, so it happened at 09:00:01.
    raw = {"type": "page", "anonymousId": "a1", "timestamp": "2023-11-14T10:00:00Z"}
    sent_at = batch_sent_at("2023-11-14T10:00:30Z")
    assert isinstance(sent_at, int)
    out = read_call(raw, None, sent_at, 1_699_952_431_000)
    assert isinstance(out, Call)
    assert out.at == 1_699_952_401_000  # 2023-11-14T09:00:01Z


def test_the_calls_own_sent_at_wins_over_the_batchs() -> None:
    raw = {"type": "page", "anonymousId": "a1", "timestamp": 1_000_000_000_000,
           "sentAt": 1_000_000_005_000}  # fmt: skip
    out = read_call(raw, None, 1_000_000_060_000, NOW)
    assert isinstance(out, Call) and out.at == NOW - 5_000


def test_original_timestamp_is_the_devices_time_when_given() -> None:
    raw = {"type": "page", "anonymousId": "a1", "originalTimestamp": 1_000_000_000_000,
           "timestamp": 1_500_000_000_000, "sentAt": 1_000_000_002_000}  # fmt: skip
    out = read_call(raw, None, None, NOW)
    assert isinstance(out, Call) and out.at == NOW - 2_000
    raw["originalTimestamp"] = None  # as good as not given: the timestamp counts
    out = read_call(raw, None, None, NOW)
    assert isinstance(out, Call) and out.at == NOW - (1_000_000_002_000 - 1_500_000_000_000)


def test_an_unreadable_batch_sent_at_is_every_calls_refusal() -> None:
    refused = batch_sent_at("tuesday")
    assert isinstance(refused, Refused) and refused.detail.startswith("sentAt: must be")


@pytest.mark.parametrize(
    ("original", "sent_at", "expected"),
    [(None, None, NOW), (None, 5, NOW), (1_600_000_000_000, None, 1_600_000_000_000)],
)
def test_without_sent_at_the_time_is_taken_as_given_and_without_one_it_is_now(
    original: int | None, sent_at: int | None, expected: int
) -> None:
    assert event_time(original, sent_at, NOW) == expected


# -- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        ([1], "invalid", "a call must be a JSON object"),
        ({"type": "screenshot", "userId": "u"}, "invalid", "type must be one of track, page"),
        ({"type": "track", "event": "X"}, "no_user", "track needs a userId or an anonymousId"),
        ({"type": "alias", "userId": "u"}, "no_user", "alias needs previousId and userId"),
        ({"type": "track", "userId": "u"}, "invalid", "track needs the event's name"),
        ({"type": "track", "userId": {"id": 1}, "event": "X"}, "invalid", "userId must be"),
        ({"type": "page", "userId": "u", "properties": []}, "invalid", "properties must be an"),
        ({"type": "page", "userId": "u", "timestamp": "yesterday"}, "invalid", "timestamp: must"),
        ({"type": "track", "userId": "u", "event": "X", "context": {"traits": 1}}, "invalid",
         "context.traits must be an object"),
    ],
)  # fmt: skip
def test_a_call_that_cannot_be_read_is_refused_with_why(
    raw: object, reason: str, detail: str
) -> None:
    out = read_call(raw, None, None, NOW)
    assert isinstance(out, Refused)
    assert out.reason == reason and out.detail.startswith(detail), out


def test_numbers_as_ids_are_taken_as_their_text_and_the_path_names_the_type() -> None:
    out = read_call({"userId": 42, "event": "X"}, "track", None, NOW)
    assert isinstance(out, Call) and (out.type, out.user_id) == ("track", "42")


def test_a_message_id_dedup_cannot_store_is_replaced_by_a_digest_that_stays_the_same() -> None:
    first = call(event="X", messageId="has spaces in it")
    again = call(event="X", messageId="has spaces in it")
    assert first.message_id == again.message_id
    assert first.message_id is not None and first.message_id.startswith("segment-")
    assert call(event="X", messageId="ok-1").message_id == "ok-1"


def test_identify_reads_traits_and_other_calls_read_context_traits() -> None:
    raw = {"type": "identify", "userId": "u", "traits": {"email": "a@b.co"}}
    identify = read_call(raw, None, None, NOW)
    assert isinstance(identify, Call) and identify.traits == {"email": "a@b.co"}
    tracked = call(event="X", context={"traits": {"phone": "+380501234567"}})
    assert tracked.traits == {"phone": "+380501234567"}


# -- the mapping: one test per row of docs/segment.md's table -------------------------------


def mapped(c: Call) -> Mapped:
    out = map_call(c)
    assert isinstance(out, Mapped), out
    return out


def test_page_becomes_page_viewed_with_url_title_and_path() -> None:
    out = mapped(call(type="page", name="Mugs", properties={
        "url": "https://shop.example/mugs", "title": "All mugs", "path": "/mugs",
        "referrer": "https://google.com"}))  # fmt: skip
    assert out == Mapped("pageViewed", {"location": "https://shop.example/mugs",
                                        "title": "All mugs", "path": "/mugs"})  # fmt: skip


def test_page_without_url_takes_context_page_and_else_is_refused() -> None:
    from_context = mapped(call(type="page", context={"page": {"url": "https://s.example/a"}}))
    assert from_context.properties["location"] == "https://s.example/a"
    refused = map_call(call(type="page", name="Home"))
    assert isinstance(refused, Refused) and refused.reason == "no_url"


def test_screen_becomes_page_viewed_with_a_deep_link_of_its_name() -> None:
    out = mapped(call(type="screen", name="Product Detail"))
    assert out.properties == {"location": "screen://Product%20Detail", "title": "Product Detail"}


def test_product_viewed_maps_its_fields_to_yespos() -> None:
    out = mapped(track("Product Viewed", product_id="507f1f77", sku="G-32", name="Monopoly",
                       price=18.99, currency="usd", category="Games", brand="Hasbro",
                       url="https://s.example/p", image_url="https://s.example/p.jpg",
                       position=3))  # fmt: skip
    assert out == Mapped(
        "productViewed",
        {"productId": "507f1f77", "price": 18.99, "currencyCode": "usd", "sku": "G-32",
         "name": "Monopoly", "category": "Games", "brand": "Hasbro",
         "url": "https://s.example/p", "imageUrl": "https://s.example/p.jpg"},
    )  # fmt: skip
    assert mapped(track("Product Viewed", sku="G-32", price=1)).properties["productId"] == "G-32"
    refused = map_call(track("Product Viewed", price=1))
    assert isinstance(refused, Refused) and refused.reason == "no_product_id"


@pytest.mark.parametrize("event", ["Product List Viewed", "Product Category Viewed"])
def test_list_and_category_views_become_product_category_viewed(event: str) -> None:
    assert mapped(track(event, category="Deals", list_id="l1")).properties == {
        "productCategoryId": "Deals"
    }
    assert mapped(track(event, list_id="l1")).properties == {"productCategoryId": "l1"}


def test_product_added_and_removed_change_the_cart_by_one_line() -> None:
    added = mapped(track("Product Added", product_id="p1", price=5, quantity=2, name="Mug",
                         currency="EUR", cart_id="c9"))  # fmt: skip
    assert added.event_type == "cartUpdated"
    assert added.properties == {"currencyCode": "EUR"}
    assert added.cart == CartChange(
        "add", ({"productId": "p1", "quantity": 2, "price": 5, "name": "Mug"},)
    )
    removed = mapped(track("product_removed", product_id="p1"))
    assert removed.cart == CartChange("remove", ({"productId": "p1"},))


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"price": 5}, "no_product_id"),
        ({"product_id": "p1"}, "bad_product"),  # no price: Yespo's cart lines need one
        ({"product_id": "p1", "price": 5, "quantity": 0}, "bad_product"),
        ({"product_id": "p1", "price": "free"}, "bad_product"),
    ],
)
def test_a_product_added_that_would_spoil_the_cart_is_refused(
    properties: dict[str, Any], reason: str
) -> None:
    out = map_call(track("Product Added", **properties))
    assert isinstance(out, Refused) and out.reason == reason


def test_cart_viewed_replaces_the_cart_with_its_products_or_shows_it_as_it_is() -> None:
    out = mapped(track("Cart Viewed", products=[{"product_id": "p1", "price": 2},
                                                {"sku": "s2", "price": 3, "quantity": 4}]))  # fmt: skip
    assert out.cart == CartChange("replace", ({"productId": "p1", "price": 2},
                                              {"productId": "s2", "quantity": 4, "price": 3}))  # fmt: skip
    assert mapped(track("Cart Viewed")).cart == CartChange("keep")


def test_order_completed_becomes_order_created_and_empties_the_cart() -> None:
    out = mapped(track("Order Completed", order_id="50314b8e", total=27.5, revenue=25,
                       shipping=3, tax=2, discount=2.5, coupon="hasbros", currency="USD",
                       products=[{"product_id": "p1", "sku": "45790-32", "name": "Monopoly",
                                  "price": 19, "quantity": 1, "category": "Games",
                                  "url": "https://s.example/p1",
                                  "image_url": "https://s.example/p1.jpg"}]))  # fmt: skip
    assert out.event_type == "orderCreated"
    assert out.cart == CartChange("empty")
    assert out.properties == {
        "externalOrderId": "50314b8e", "totalCost": 27.5, "status": "INITIALIZED",
        "date": NOW, "currency": "USD",
        "items": [{"externalItemId": "p1", "name": "Monopoly", "quantity": 1, "cost": 19,
                   "url": "https://s.example/p1", "imageUrl": "https://s.example/p1.jpg",
                   "category": "Games"}],
        "shipping": 3, "tax": 2, "discount": 2.5, "coupon": "hasbros",
    }  # fmt: skip
    assert mapped(track("Order Completed", order_id="1", revenue=9)).properties["totalCost"] == 9


def test_order_updated_cancelled_and_refunded() -> None:
    updated = mapped(track("Order Updated", order_id="o1", total=5, currency="EUR"))
    assert updated == Mapped("orderUpdated", {"externalOrderId": "o1", "totalCost": 5,
                                              "currency": "EUR"})  # fmt: skip
    for event in ("Order Cancelled", "Order Refunded"):
        assert mapped(track(event, order_id="o1", total=5)) == Mapped(
            "orderCancelled", {"externalOrderId": "o1"}
        )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("Signed Up", "Signed_Up"),
        ("Newsletter: subscribed!", "Newsletter:_subscribed"),
        ("  a/b|c  ", "a_b_c"),
        ("x" * 150, "x" * 100),
    ],
)
def test_other_track_calls_get_a_yespo_safe_custom_type(event: str, expected: str) -> None:
    assert custom_type(event) == expected


def test_a_custom_event_keeps_its_properties_but_not_contact_identifiers() -> None:
    out = mapped(track("Signed Up", plan="pro", Email="a@b.co", seats=3))
    assert out == Mapped("Signed_Up", {"plan": "pro", "seats": 3})


def test_custom_events_can_be_left_out() -> None:
    assert map_call(track("Signed Up"), custom_events=False) is None
    assert isinstance(map_call(track("Product Viewed", sku="x"), custom_events=False), Mapped)


# -- remembered carts ------------------------------------------------------------------------


def line(product_id: str, **fields: Any) -> dict[str, Any]:
    return {"productId": product_id, **fields}


def test_adding_a_product_again_adds_its_quantity_and_takes_its_new_fields() -> None:
    cart = Cart()
    apply(cart, CartChange("add", (line("p1", price=5),)), "m1")
    apply(cart, CartChange("add", (line("p2", price=1, quantity=3),)), "m2")
    apply(cart, CartChange("add", (line("p1", price=4, quantity=2),)), "m3")
    assert cart.lines() == [line("p1", price=4, quantity=3), line("p2", price=1, quantity=3)]


def test_removing_takes_its_quantity_off_or_the_whole_line() -> None:
    cart = Cart([line("p1", price=5, quantity=3), line("p2", price=1, quantity=1)])
    apply(cart, CartChange("remove", (line("p1", quantity=2),)), "m1")
    assert cart.lines()[0]["quantity"] == 1
    apply(cart, CartChange("remove", (line("p2"),)), "m2")
    apply(cart, CartChange("remove", (line("p9"),)), "m3")  # not in the cart: nothing
    assert [p["productId"] for p in cart.lines()] == ["p1"]
    apply(cart, CartChange("remove", (line("p1", quantity=5),)), "m4")
    assert cart.lines() == [] and cart.dump() is None  # an empty cart is not remembered


def test_a_retried_call_is_applied_once() -> None:
    cart = Cart()
    change = CartChange("add", (line("p1", price=5),))
    apply(cart, change, "m1")
    again = Cart.load(cart.dump())
    apply(again, change, "m1")
    assert again.lines() == [line("p1", price=5, quantity=1)]


def test_replace_and_empty() -> None:
    cart = Cart([line("p1", price=5, quantity=1)])
    apply(cart, CartChange("replace", (line("p2", price=2),)), "m1")
    assert cart.lines() == [line("p2", price=2, quantity=1)]
    apply(cart, CartChange("keep"), "m2")
    assert cart.lines() == [line("p2", price=2, quantity=1)]
    apply(cart, CartChange("empty"), "m3")
    assert cart.lines() == []


def test_a_cart_is_bounded_by_what_one_yespo_event_fits() -> None:
    cart = Cart([line(f"p{i}", price=1, quantity=1) for i in range(MAX_CART_PRODUCTS)])
    problem = apply(cart, CartChange("add", (line("one-more", price=1),)), "m1")
    assert problem is not None and "100 products" in problem
    assert len(cart.products) == MAX_CART_PRODUCTS
    apply(cart, CartChange("add", (line("p0", price=1),)), "m2")  # more of one it has: fine
    assert cart.products[0]["quantity"] == 2
