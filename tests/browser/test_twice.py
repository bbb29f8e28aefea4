"""Double inclusion, two tabs, a hostile page: no duplicates, and never an error."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from .conftest import (
    WEB_PATH,
    add_page,
    eventually,
    html,
    pipeline,
    posted_events,
    settled,
    snippet,
    yespo_events,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCRIPT_TAG = f'<script src="{WEB_PATH}.js"></script>'


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(snippet() + snippet(), id="snippet-twice"),
        pytest.param(snippet() + SCRIPT_TAG + snippet() + SCRIPT_TAG, id="and-script-tags"),
        pytest.param(SCRIPT_TAG + snippet() + snippet(), id="script-first"),
    ],
)
async def test_included_twice_the_script_runs_once(
    tmp_path: Path, context: BrowserContext, head: str
) -> None:
    async with pipeline(tmp_path) as (c, standin, tap):
        await add_page(context, c.url + "/twice", html(head=head, body="<p>Twice</p>"))
        page = await context.new_page()
        await page.goto(c.url + "/twice")
        await page.evaluate("yc('identify', {email: 'twice@example.com'})")
        await page.evaluate("yc('track', 'clicked', {n: 1})")
        assert await page.evaluate("yc.version") == "1.0.0"

        await settled(standin, 2)
        assert [kind for kind, _ in yespo_events(standin)] == ["pageViewed", "clicked"]
        sent = [e["type"] for e in posted_events(tap.posts)]
        assert sorted(sent) == ["clicked", "identify", "pageViewed"], "each sent once"


async def test_two_tabs_do_not_send_the_same_events_twice(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, standin, tap):
        # A slow collector: one tab's request is still in flight when the other's timer
        # fires, and the outbox they share still holds what is being sent.
        tap.delay_s = 0.4
        tabs = [await context.new_page(), await context.new_page()]
        await tabs[0].goto(c.url + "/demo/category.html")
        await tabs[1].goto(c.url + "/demo/product-tee.html")
        # Both tabs track, interleaved, into the outbox they share.
        for n in range(6):
            for i, tab in enumerate(tabs):
                await tab.evaluate(f"yc('track', 'tick', {{tab: {i}, n: {n}}})")
            await asyncio.sleep(0.1)
        await tabs[1].evaluate("yc('identify', {email: 'tabs@example.com'})")

        expected = 2 + 2 + 12  # two page views, the category and product views, the ticks
        await settled(standin, expected)
        counts = Counter(e["messageId"] for e in posted_events(tap.posts))
        assert len(counts) == expected + 1  # + identify
        assert set(counts.values()) == {1}, "no event was sent by both tabs"
        ticks = [p for kind, p in yespo_events(standin) if kind == "tick"]
        assert sorted((int(p["tab"]), int(p["n"])) for p in ticks) == [
            (i, n) for i in range(2) for n in range(6)
        ]


# A page that does everything wrong. The script must neither throw into it nor stop
# working: the context fixture fails the test on any uncaught error in the page.
HOSTILE = html(
    head="""<script>
// storage that throws, as in some private modes
Object.defineProperty(window, "localStorage", {get: function () { throw new Error("denied"); }});
</script>"""
    + snippet(debug=False),
    body="""<script>
var loop = {}; loop.self = loop;
yc("noSuchCommand", 1);
yc("productViewed", loop);
yc("track");
yc("identify");
yc("cartUpdated", null);
yc("init", "not options");
yc();
yc("track", "stillWorks", {ok: true});
</script>""",
)


async def test_bad_calls_and_broken_storage_never_throw_into_the_page(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path) as (c, _, tap):
        await add_page(context, c.url + "/hostile", HOSTILE)
        page = await context.new_page()
        await page.goto(c.url + "/hostile")
        await eventually(lambda: "stillWorks" in [e.get("type") for e in posted_events(tap.posts)])
        # Only the events that make sense left the page.
        assert [e.get("type") for e in posted_events(tap.posts)] == [
            "pageViewed",
            "cartUpdated",  # without products: the collector's to judge (it rejects it)
            "stillWorks",
        ]
