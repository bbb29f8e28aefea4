"""The collector goes down while a visitor browses, then comes back: nothing is lost."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from standin import StandIn

from ..conftest import free_port
from .conftest import (
    YESPO_KEY,
    collector_at,
    forwarding,
    serve_files_from_disk,
    settled,
    yespo_events,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The script's outbox: one localStorage key per event, "yc_q<order><messageId>".
OUTBOX = "Object.keys(localStorage).filter(k => k.startsWith('yc_q')).sort()"
EMPTY_OUTBOX = f"!{OUTBOX}.length"


async def outbox(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate(
        f"{OUTBOX}.map(k => JSON.parse(localStorage[k]))"
    )
    return events


async def test_events_made_while_the_collector_is_down_arrive_once_when_it_is_back(
    tmp_path: Path, context: BrowserContext
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = base + "/demo/"
    await serve_files_from_disk(context, base)  # pages load whether the collector runs or not
    page = await context.new_page()
    async with StandIn(api_key=YESPO_KEY) as standin:
        settings = forwarding(tmp_path, standin)
        async with collector_at(settings, port) as (_, tap):
            await page.goto(demo)
            await page.wait_for_function(EMPTY_OUTBOX)  # the first page view is confirmed
        # Down: the visitor goes on browsing; the requests fail, the events wait.
        await page.click("#category-link")
        await page.click("#product-mug-link")
        await page.click("#add-to-cart")
        await page.wait_for_selector("#cart-count:text('1')")
        await asyncio.sleep(1.5)  # a request and a retry fail
        waiting = await outbox(page)
        assert [e["type"] for e in waiting] == [
            "pageViewed",
            "productCategoryViewed",
            "pageViewed",
            "productViewed",
            "cartUpdated",
        ]
        # Back on the same port: the page's next retry delivers them, without a reload.
        async with collector_at(settings, port) as (_, tap):
            await page.wait_for_function(EMPTY_OUTBOX)
            assert tap.posts
            await page.evaluate("yc('identify', {email: 'patient@example.com'})")
            await settled(standin, 6)

    arrived = yespo_events(standin)
    assert [kind for kind, _ in arrived] == [
        "pageViewed",
        *(e["type"] for e in waiting),
    ]
    pages = [json.loads(p["page"])["location"] for k, p in arrived if k == "pageViewed"]
    assert pages == [demo, demo + "category.html", demo + "product-mug.html"]
    # Each once: the events were sent more than once (beacons, retries), stored once.
    assert max(Counter(r.raw for r in standin.events).values()) == 1
    assert {p["email"] for _, p in arrived} == {"patient@example.com"}
