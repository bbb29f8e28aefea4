"""A shopper who meets the browser endpoint's ceiling (429) loses nothing: the script
keeps the events and sends them again when the collector says it may."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from .conftest import pipeline, settled, yespo_events

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMPTY_OUTBOX = "!Object.keys(localStorage).filter(k => k.startsWith('yc_q')).length"


async def test_a_shopper_held_back_by_the_ceiling_gets_every_event_through_once(
    tmp_path: Path, context: BrowserContext
) -> None:
    # One request at once, then one a second: the second page's requests meet a 429.
    async with pipeline(tmp_path, web_rate=1, web_burst=1) as (c, standin, _):
        demo = c.url + "/demo/"
        page = await context.new_page()
        await page.goto(demo)
        await page.wait_for_function(EMPTY_OUTBOX)
        await page.click("#category-link")
        await page.wait_for_function(EMPTY_OUTBOX)  # confirmed, after a retry
        await page.evaluate("yc('identify', {email: 'calm@example.com'})")
        await page.wait_for_function(EMPTY_OUTBOX)
        await settled(standin, 3)
        async with c.http.get(c.url + "/metrics") as resp:
            metrics = await resp.text()
    assert 'refused_requests_total{endpoint="web",status="429"}' in metrics
    arrived = yespo_events(standin)
    assert [kind for kind, _ in arrived] == ["pageViewed", "pageViewed", "productCategoryViewed"]
    assert max(Counter(r.raw for r in standin.events).values()) == 1
