"""Consent and opt-out: nothing leaves the page without them; what waited keeps its time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page

from collector.spool import Spool

from ..conftest import Running
from .conftest import add_page, collector_at, demo_settings, eventually, html, snippet

pytestmark = pytest.mark.asyncio(loop_scope="session")

ASKING = html(head=snippet(requireConsent=True), body="<p>May we?</p>")
PLAIN = html(head=snippet(), body="<p>Hello</p>")


def spool(c: Running) -> Spool:
    s: Spool = c.app.state.spool
    return s


async def visitor_cookie(context: BrowserContext, url: str) -> str | None:
    return next((k["value"] for k in await context.cookies(url) if k["name"] == "yc_aid"), None)


async def call(page: Page, commands: str) -> int:
    """Run `commands` in the page; the page's clock (epoch ms) right after."""
    at: int = await page.evaluate(f"() => {{ {commands}; return Date.now(); }}")
    return at


async def test_events_wait_for_consent_then_go_with_their_original_time(
    tmp_path: Path, context: BrowserContext
) -> None:
    # Delivery off: the spool shows each event's time as the collector stored it.
    async with collector_at(demo_settings(tmp_path)) as (c, tap):
        await add_page(context, c.url + "/asking", ASKING)
        page = await context.new_page()
        loaded_from = int(time.time() * 1000)
        await page.goto(c.url + "/asking")
        tracked_at = await call(
            page, "yc('track', 'browsed', {n: 1}); yc('identify', {email: 'late@example.com'})"
        )
        await asyncio.sleep(1.5)
        assert tap.posts == [], "nothing leaves before consent"
        assert await visitor_cookie(context, c.url) is None, "no visitor cookie either"

        consent_at = await call(page, "yc('consent', true)")
        stored = []

        async def arrived() -> bool:
            stored[:] = await spool(c).pending(10)
            return len(stored) == 2

        await eventually(arrived)
        times = {r.event_type: r.event_time for r in stored}
        assert loaded_from <= times["pageViewed"] <= times["browsed"] <= tracked_at
        assert consent_at - times["browsed"] >= 1500
        assert await visitor_cookie(context, c.url) == tap.posts[0]["anonymousId"]

        # The decision is kept: the next page sends at once.
        await page.reload()
        await eventually(lambda: len(tap.posts) == 2)
        assert [e["type"] for e in tap.posts[1]["batch"]] == ["pageViewed"]


async def test_refused_consent_sends_nothing_then_or_later(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with collector_at(demo_settings(tmp_path)) as (c, tap):
        await add_page(context, c.url + "/asking", ASKING)
        page = await context.new_page()
        await page.goto(c.url + "/asking")
        await call(page, "yc('track', 'before', {n: 1})")
        await call(page, "yc('consent', false); yc('track', 'after', {n: 2})")
        await page.reload()  # the refusal is remembered
        await call(
            page, "yc('track', 'nextPage', {n: 3}); yc('identify', {email: 'no@example.com'})"
        )
        await asyncio.sleep(1)

        assert tap.posts == []
        stats = await spool(c).stats()
        assert (stats.depth, stats.held) == (0, 0)
        assert await visitor_cookie(context, c.url) is None


async def test_opted_out_visitors_send_nothing_until_they_opt_in(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with collector_at(demo_settings(tmp_path)) as (c, tap):
        await add_page(context, c.url + "/plain", PLAIN)
        page = await context.new_page()
        await page.goto(c.url + "/plain")
        await eventually(lambda: len(tap.posts) == 1)  # the page view
        await call(page, "yc('optOut'); yc('track', 'hidden', {n: 1})")
        await page.reload()
        await call(page, "yc('track', 'hidden', {n: 2})")
        await asyncio.sleep(1)
        assert len(tap.posts) == 1

        await call(page, "yc('optIn'); yc('track', 'seen', {n: 3})")
        await eventually(lambda: len(tap.posts) == 2)
        await asyncio.sleep(0.5)
        assert [e["type"] for body in tap.posts[1:] for e in body["batch"]] == ["seen"]
