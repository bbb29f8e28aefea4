"""A visitor clicks through the demo shop; Yespo gets the shop's events, in order."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext

from standin import Faults

from .conftest import eventually, pipeline, posted_events, settled, yespo_events

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMAIL = "jane@example.com"


def cart(*lines: tuple[str, int]) -> list[dict[str, Any]]:
    products = {"mug": ("Yespo mug", 12.5), "tee": ("Yespo T-shirt", 20)}
    return [
        {"productId": pid, "quantity": q, "price": products[pid][1], "name": products[pid][0]}
        for pid, q in lines
    ]


async def test_a_visit_to_the_demo_shop_reaches_yespo_with_the_contact_given_at_checkout(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, standin, tap):
        demo = c.url + "/demo/"
        page = await context.new_page()
        expected: list[tuple[str, Any]] = []  # (eventTypeKey, its main param, parsed)

        def viewed(name: str) -> None:
            expected.append(("pageViewed", {"location": demo + name}))

        await page.goto(demo)
        viewed("")
        await page.click("#category-link")
        viewed("category.html")
        expected.append(("productCategoryViewed", {"productCategoryId": "merch"}))
        await page.click("#product-mug-link")
        viewed("product-mug.html")
        expected.append(("productViewed", {"productId": "mug", "price": 12.5, "isInStock": 1}))
        await page.click("#add-to-cart")
        await page.wait_for_selector("#cart-count:text('1')")
        expected.append(("cartUpdated", cart(("mug", 1))))
        await page.click("#add-to-cart")
        await page.wait_for_selector("#cart-count:text('2')")
        expected.append(("cartUpdated", cart(("mug", 2))))
        await page.click("#category-link")
        viewed("category.html")
        expected.append(("productCategoryViewed", {"productCategoryId": "merch"}))
        await page.click("#product-tee-link")
        viewed("product-tee.html")
        expected.append(("productViewed", {"productId": "tee", "price": 20, "isInStock": 1}))
        await page.click("#add-to-cart")
        await page.wait_for_selector("#cart-count:text('3')")
        expected.append(("cartUpdated", cart(("mug", 2), ("tee", 1))))
        await page.click("#cart-link")
        viewed("cart.html")
        await page.click("#remove-tee")
        await page.wait_for_selector("#cart-count:text('2')")
        expected.append(("cartUpdated", cart(("mug", 2))))
        await page.click("#to-checkout")
        viewed("checkout.html")
        await page.fill("#email", " Jane@Example.com")
        await page.click("#place-order")  # identify, then on to the thank-you page
        await page.wait_for_selector("#order-id:not(:empty)")
        order_id = await page.text_content("#order-id")
        viewed("thanks.html")

        await settled(standin, len(expected) + 1)  # + orderCreated
        arrived = yespo_events(standin)
        assert all(params["email"] == EMAIL for _, params in arrived)
        # Yespo keeps a contact's events in order; the order goes by its own key.
        orders = [params for kind, params in arrived if kind == "orderCreated"]
        others = [(kind, params) for kind, params in arrived if kind != "orderCreated"]
        main_param = {
            "pageViewed": "page",
            "productCategoryViewed": "category",
            "productViewed": "product",
            "cartUpdated": "products",
        }
        assert [(k, json.loads(p[main_param[k]])) for k, p in others] == expected
        assert all(p["currencyCode"] == "USD" for k, p in others if k == "productViewed")

        carts = [p for k, p in others if k == "cartUpdated"]
        recycle_ids = [p["recycleStateId"] for p in carts]
        assert all(re.fullmatch(r"[0-9a-f]{32}", r) for r in recycle_ids)
        assert len(set(recycle_ids)) == len(recycle_ids), "a new id for every cart state"
        assert all(p["currencyCode"] == "USD" for p in carts)

        # What the page sent: small batches of one visitor, from the site key it was given.
        assert tap.posts and all(len(body["batch"]) <= 20 for body in tap.posts)
        assert {body["siteKey"] for body in tap.posts} == {"demo"}
        assert {body["v"] for body in tap.posts} == {"1.0.0"}
        [visitor] = {body["anonymousId"] for body in tap.posts}
        cookies = {k["name"]: k["value"] for k in await context.cookies(c.url)}
        assert cookies["yc_aid"] == visitor

        [order] = orders
        assert order["externalOrderId"] == order_id
        assert order["recycleStateId"] == recycle_ids[-1]
        assert order["status"] == "INITIALIZED"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", order["date"])
        assert order["currency"] == "USD"
        assert float(order["totalCost"]) == 25
        assert json.loads(order["items"]) == [
            {
                "externalItemId": "mug",
                "name": "Yespo mug",
                "quantity": 2,
                "cost": 12.5,
                "url": demo + "product-mug.html",
                "imageUrl": demo + "img/mug.svg",
            }
        ]


async def test_the_demo_says_events_wait_and_logging_in_releases_them_before_checkout(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, standin, _):
        demo = c.url + "/demo/"
        page = await context.new_page()
        await page.goto(demo + "product-mug.html")
        note = await page.text_content("#demo-note")
        assert note is not None and "wait in the collector" in note
        assert "/_standin/events" in note  # where to watch them
        await page.click("#add-to-cart")
        await page.wait_for_selector("#cart-count:text('1')")
        await page.click("#account-link")
        await page.fill("#login-email", EMAIL)
        await page.click("#log-in")
        await page.wait_for_selector("#logged-in")
        note = await page.text_content("#demo-note")
        assert note is not None and f"Logged in as {EMAIL}" in note

        # Held until the log-in, then delivered with the contact: no checkout needed.
        await settled(standin, 4)
        arrived = yespo_events(standin)
        assert [kind for kind, _ in arrived] == [
            "pageViewed",
            "productViewed",
            "cartUpdated",
            "pageViewed",
        ]
        assert all(params["email"] == EMAIL for _, params in arrived)

        # Checkout knows who is logged in.
        await page.goto(demo + "checkout.html")
        assert await page.input_value("#email") == EMAIL


async def test_an_order_placed_at_checkout_reaches_yespo_after_the_browsing_before_it(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, standin, tap):
        # A slow Yespo: the visitor's browsing, released at checkout, is still on its way
        # when the order comes. One contact's events go one at a time; the order by its
        # own key, so only the spool's order guarantee keeps it behind them.
        standin.faults = Faults(delay_ms=100)
        demo = c.url + "/demo/"
        page = await context.new_page()
        await page.goto(demo)
        await page.click("#category-link")
        await page.click("#product-mug-link")
        await page.click("#add-to-cart")
        await page.wait_for_selector("#cart-count:text('1')")
        await page.click("#cart-link")
        await page.click("#to-checkout")
        await page.fill("#email", EMAIL)
        await page.click("#place-order")
        await page.wait_for_selector("#order-id:not(:empty)")

        def sent() -> list[dict[str, Any]]:
            """Each event the page sent, once (a page sends again what it may have lost)."""
            first: dict[str, dict[str, Any]] = {}
            for event in posted_events(tap.posts):
                first.setdefault(event["messageId"], event)
            return [e for e in first.values() if e["type"] != "identify"]

        await eventually(lambda: any(e["type"] == "orderCreated" for e in sent()))
        await settled(standin, len(sent()))
        arrived = [kind for kind, _ in yespo_events(standin)]
        events = sent()
        ordered = events.index(next(e for e in events if e["type"] == "orderCreated"))
        browsed = [e["type"] for e in events[:ordered]]  # all the page sent before the order
        assert {"productViewed", "cartUpdated"} <= set(browsed)
        assert arrived[: len(browsed)] == browsed, arrived
        assert arrived[len(browsed)] == "orderCreated"
