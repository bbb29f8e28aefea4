"""The live inspector's page (/inspect, #17) in Chromium, against the real collector and
the Yespo stand-in: events appear as they come in, refusals show their field errors, dead
letters replay from the page, and the page outlives a collector restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from standin import Faults, StandIn

from ..conftest import API_KEY, YESPO_KEY, Process, free_port
from .conftest import STEP_TIMEOUT_MS, pipeline

pytestmark = pytest.mark.asyncio(loop_scope="session")

INSPECT_KEY = "inspect-secret"
EMAIL = "alice@example.com"
MASKED = "a***@example.com"


def page_view(email: str = EMAIL, **extra: Any) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": extra.pop("messageId", str(uuid.uuid4())),
        "contact": {"email": email},
        "properties": {"location": "https://shop.example/sale", **extra},
    }


async def post_event(url: str, event: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/v1/events", json=event, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


@asynccontextmanager
async def signed_in(context: BrowserContext, url: str) -> AsyncIterator[Page]:
    """The inspector, opened and signed in with the operator key through its form; closed
    on the way out, so the collector is not left with a watcher when it stops."""
    page = await context.new_page()
    try:
        await page.goto(url + "/inspect")
        await page.fill("#key", INSPECT_KEY)
        await page.click("#sign-in")
        await expect(page.locator("#app")).to_be_visible()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        yield page
    finally:
        await page.close()


def journey(page: Page, message_id: str) -> Locator:
    return page.locator(f'#journeys tr[data-journey="{message_id}"]')


async def test_the_page_without_the_key_shows_only_the_key_form_and_no_data(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, standin, _):
        await post_event(c.url, page_view())
        await standin.wait_for_events(1, within_s=10)
        page = await context.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        await page.goto(c.url + "/inspect")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#app")).to_be_hidden()

        await page.fill("#key", "not-the-key")
        await page.click("#sign-in")
        await expect(page.locator("#login-error")).to_have_text("That is not the operator key.")
        await expect(page.locator("#app")).to_be_hidden()
        assert not [u for u in asked if "/inspect/stream" in u], asked
        text = await page.locator("body").inner_text()
        assert "pageViewed" not in text and "example.com" not in text
        assert await page.locator("#journeys tr").count() == 0

        # The right key opens it, and the event sent before is in the buffer.
        await page.fill("#key", INSPECT_KEY)
        await page.click("#sign-in")
        await expect(page.locator("#app")).to_be_visible()
        await expect(page.locator("#journeys tr")).to_have_count(1)

        # Signed out: the key form again, and the stream is refused without the cookie.
        await page.click("#sign-out")
        await expect(page.locator("#login")).to_be_visible()
        await page.reload()
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#app")).to_be_hidden()


async def test_a_posted_event_appears_with_its_journey_and_what_yespo_answered(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with (
        pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, standin, _),
        signed_in(context, c.url) as page,
    ):
        event = page_view()
        posted = time.monotonic()
        status, _ = await post_event(c.url, event)
        assert status == 200
        row = journey(page, event["messageId"])
        await expect(row).to_be_visible(timeout=STEP_TIMEOUT_MS)
        print(f"post -> row on the page: {(time.monotonic() - posted) * 1000:.0f} ms")
        await expect(row.locator(".chip.delivered")).to_be_visible()
        await expect(row).to_have_attribute("data-outcome", "delivered")
        steps = await row.locator(".chip").evaluate_all("cs => cs.map(c => c.dataset.step)")
        assert steps == ["received", "normalized", "delivered"]

        await row.click()
        detail = page.locator("#detail")
        received = detail.locator('[data-side="received"]')
        await expect(received).to_contain_text("https://shop.example/sale")
        normalized = detail.locator('[data-side="normalized"]')
        await expect(normalized).to_contain_text('"eventTypeKey": "pageViewed"')
        answer = detail.locator('[data-side="answer"]')
        await expect(answer).to_contain_text("HTTP 200")
        [(kind, params)] = [(e.body["eventTypeKey"], e.body["params"]) for e in standin.events]
        assert kind == "pageViewed" and params


async def test_emails_are_masked_until_the_operator_shows_personal_data(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with (
        pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, _, _),
        signed_in(context, c.url) as page,
    ):
        event = page_view()
        await post_event(c.url, event)
        row = journey(page, event["messageId"])
        await expect(row).to_contain_text(MASKED)
        await row.click()
        await expect(page.locator("#detail")).to_contain_text(MASKED)
        assert EMAIL not in await page.locator("body").inner_text()

        await page.check("#unmask")
        row = journey(page, event["messageId"])
        await expect(row).to_contain_text(EMAIL)
        await row.click()
        await expect(page.locator('#detail [data-side="received"]')).to_contain_text(EMAIL)

        await page.uncheck("#unmask")
        await expect(journey(page, event["messageId"])).to_contain_text(MASKED)
        assert EMAIL not in await page.locator("body").inner_text()


async def test_a_refused_event_shows_the_field_error_its_sender_got(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with (
        pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, _, _),
        signed_in(context, c.url) as page,
    ):
        bad = page_view(email="alice")
        status, reply = await post_event(c.url, bad)
        assert status == 400
        [error] = reply["rejected"][0]["errors"]

        row = journey(page, bad["messageId"])
        await expect(row).to_have_attribute("data-outcome", "refused")
        await row.click()
        refused = page.locator('#detail [data-side="normalized"]')
        await expect(refused.locator(".errors li")).to_have_text(
            f"{error['field']} {error['message']}"
        )
        await expect(page.locator('#detail [data-side="answer"]')).to_contain_text("Never sent")

        # The outcome filter keeps only the refused one.
        good = page_view()
        await post_event(c.url, good)
        await expect(journey(page, good["messageId"])).to_be_visible()
        await page.select_option("#f-outcome", "refused")
        await expect(journey(page, good["messageId"])).to_be_hidden()
        await expect(journey(page, bad["messageId"])).to_be_visible()


async def test_a_dead_letter_replayed_from_the_page_reaches_yespo(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, standin, _):
        standin.faults = Faults(status=400, times=1)  # Yespo refuses the first one
        async with signed_in(context, c.url) as page:
            event = page_view()
            await post_event(c.url, event)
            row = journey(page, event["messageId"])
            await expect(row).to_have_attribute("data-outcome", "dead")
            assert standin.events == []

            await page.click("#tab-dead")
            dead = page.locator("#dead-list tr")
            await expect(dead).to_have_count(1)
            await expect(dead).to_contain_text("pageViewed")
            await expect(page.locator("#dead-count")).to_have_text("1")
            await dead.locator('button[data-action="replay"]').click()
            await expect(page.locator("#dead-message")).to_contain_text("Replayed 1")

            await standin.wait_for_events(1, within_s=10)
            [record] = standin.events
            assert record.body["eventTypeKey"] == "pageViewed"
            await expect(page.locator("#dead-list tr")).to_have_count(0)
            await page.click("#tab-journeys")
            steps = row.locator(".chip")
            await expect(steps.last).to_have_attribute("data-step", "delivered")
            await expect(row.locator('.chip[data-step="replayed"]')).to_have_count(1)


async def test_a_dead_letter_purged_from_the_page_is_gone(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, standin, _):
        standin.faults = Faults(status=400)
        async with signed_in(context, c.url) as page:
            events = [page_view(), page_view()]
            for event in events:
                await post_event(c.url, event)
            await page.click("#tab-dead")
            await expect(page.locator("#dead-list tr")).to_have_count(2)
            page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
            await page.click("#dead-purge-all")
            await expect(page.locator("#dead-message")).to_contain_text("Purged 2")
            await expect(page.locator("#dead-list tr")).to_have_count(0)
            await page.click("#tab-journeys")
            for event in events:
                await expect(journey(page, event["messageId"])).to_have_attribute(
                    "data-outcome", "purged"
                )


async def test_the_page_reconnects_across_a_collector_restart(
    tmp_path: Path, context: BrowserContext, processes: list[Process]
) -> None:
    port = free_port()
    async with StandIn(api_key=YESPO_KEY) as standin:
        env = {
            "COLLECTOR_API_KEYS": API_KEY,
            "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/spool.db",
            "COLLECTOR_INSPECT_KEY": INSPECT_KEY,
            "YESPO_API_URL": standin.url,
            "YESPO_API_KEY": YESPO_KEY,
        }
        first = Process(port, env, tmp_path / "first.log")
        processes.append(first)
        await first.wait_ready()
        async with signed_in(context, first.url) as page:
            before = page_view()
            await post_event(first.url, before)
            await expect(journey(page, before["messageId"])).to_have_attribute(
                "data-outcome", "delivered"
            )

            first.stop()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
            second = Process(port, env, tmp_path / "second.log")
            processes.append(second)
            await second.wait_ready()
            after = page_view()
            await post_event(second.url, after)
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            await expect(journey(page, after["messageId"])).to_have_attribute(
                "data-outcome", "delivered", timeout=STEP_TIMEOUT_MS
            )
            await expect(journey(page, before["messageId"])).to_have_count(1)
            await standin.wait_for_events(2, within_s=10)


async def test_pausing_keeps_new_steps_and_shows_them_on_resume(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with (
        pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, _, _),
        signed_in(context, c.url) as page,
    ):
        await page.click("#pause")
        event = page_view()
        await post_event(c.url, event)
        await expect(page.locator("#pending")).to_contain_text("paused: 3 new steps")
        await expect(journey(page, event["messageId"])).to_have_count(0)
        await page.click("#pause")
        await expect(journey(page, event["messageId"])).to_have_attribute(
            "data-outcome", "delivered"
        )
        await expect(page.locator("#pending")).to_be_hidden()


async def test_the_demo_shops_note_leads_to_the_inspector(
    tmp_path: Path, context: BrowserContext
) -> None:
    async with pipeline(tmp_path, inspect_key=INSPECT_KEY) as (c, _, _):
        page = await context.new_page()
        await page.goto(c.url + "/demo/")
        await page.click("#demo-note #inspect-link")
        await expect(page.locator("#login")).to_be_visible()
        assert page.url == c.url + "/inspect"
