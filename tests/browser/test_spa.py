"""Single-page apps: one page view per route, with its own URL; none when told not to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from .conftest import add_page, html, pipeline, posted_events, settled, snippet, yespo_events

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_each_route_of_a_single_page_app_is_one_page_view(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, standin, tap):
        account = c.url + "/demo/account.html"
        page = await context.new_page()
        await page.goto(account)
        await page.click("#tab-orders")  # pushState
        await page.click("#tab-orders")  # the same tab: no new URL, no page view
        await page.click("#tab-settings")
        await page.go_back()  # popstate
        await page.evaluate("history.replaceState(null, '', location.href)")  # same URL
        await page.evaluate("location.hash = 'help'")  # hashchange (and popstate)
        await page.evaluate("history.replaceState(null, '', '?tab=profile')")  # a new URL
        await page.evaluate("yc('identify', {email: 'spa@example.com'})")

        routes = [
            account,
            account + "?tab=orders",
            account + "?tab=settings",
            account + "?tab=orders",
            account + "?tab=orders#help",
            account + "?tab=profile",
        ]
        await settled(standin, len(routes))
        arrived = yespo_events(standin)
        assert [json.loads(p["page"])["location"] for _, p in arrived] == routes
        # Each view's context is its route; its referrer, the route before.
        views = [e for e in posted_events(tap.posts) if e["type"] == "pageViewed"]
        assert [v["context"]["page"]["url"] for v in views] == routes
        assert [v["context"]["page"]["referrer"] for v in views[1:]] == routes[:-1]
        assert views[1]["context"]["page"]["title"] == "Account: orders - Demo shop"


async def test_with_auto_page_off_only_page_calls_make_page_views(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, standin, _):
        await add_page(context, c.url + "/app", html(head=snippet(autoPage=False)))
        page = await context.new_page()
        await page.goto(c.url + "/app")
        await page.evaluate("history.pushState(null, '', '/app?step=2')")
        await page.evaluate("yc('page', {section: 'checkout'})")
        await page.evaluate("yc('identify', {email: 'manual@example.com'})")

        await settled(standin, 1)
        [(kind, params)] = yespo_events(standin)
        assert kind == "pageViewed"
        assert json.loads(params["page"]) == {"location": c.url + "/app?step=2"}
        assert params["section"] == "checkout"
