"""An event tracked just before the page goes away is not lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from .conftest import add_page, eventually, html, pipeline, settled, snippet, yespo_events

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Clicking the link tracks an event and leaves at once, for a page without the script:
# only what the leaving page sends on its way out (sendBeacon on pagehide) can deliver it.
LEAVING = html(
    head=snippet(),
    body="""<a id="go" href="/elsewhere">Go</a>
<script>
yc("identify", {email: "leaver@example.com"});
document.getElementById("go").onclick = function () {
  yc("track", "leftPage", {via: "link"});
};
</script>""",
)


@pytest.mark.parametrize("leave", ["navigate", "close"])
async def test_an_event_tracked_right_before_the_page_goes_away_still_arrives(
    tmp_path: Path, context: BrowserContext, leave: str
) -> None:
    async with pipeline(tmp_path) as (c, standin, tap):
        await add_page(context, c.url + "/leaving", LEAVING)
        await add_page(context, c.url + "/elsewhere", html(body="No tracking here."))
        page = await context.new_page()
        await page.goto(c.url + "/leaving")
        await eventually(lambda: len(tap.posts) == 1)  # the page view and identify went
        if leave == "navigate":
            await page.click("#go")
            await page.wait_for_url(c.url + "/elsewhere")
        else:
            await page.evaluate("yc('track', 'leftPage', {via: 'close'})")
            await page.close()

        await settled(standin, 2)
        [(_, viewed), (kind, left)] = yespo_events(standin)
        assert viewed["page"] == f'{{"location":"{c.url}/leaving"}}'
        assert (kind, left) == (
            "leftPage",
            {"email": "leaver@example.com", "via": leave.replace("navigate", "link")},
        )
