"""The inspector page (#17): how soon a posted event shows on it, and the docs' screenshot.

    .venv/bin/python bench/inspect_page.py [--events 50] [--screenshot docs/inspector.png]

Not part of the test suite. Starts the Yespo stand-in (`python -m standin`) and
`collector serve` (demo shop on, COLLECTOR_INSPECT_KEY set, a fresh SQLite spool,
delivering to the stand-in) as processes on 127.0.0.1, and Debian's Chromium through
Playwright, signed in to /inspect through its key form.

  latency     --events single events POSTed to /v1/events one after another (100 ms
              apart, each after the last one's row showed). For each: the wall-clock time
              from just before the POST to the moment the page put the event's row in its
              list (Date.now() in a MutationObserver; one machine, one clock). Prints the
              median, p95 and max. The issue's target: within a second.
  screenshot  (with --screenshot PATH) a visitor clicks through the demo shop (held until
              they log in, then released and delivered), a backend sends an order, a bad
              event (refused), one that Yespo refuses (dead letter) and one Yespo answers
              503 first (retried); then the page, with the dead letter's journey open, is saved
              as a PNG (1440x900).

Every process is stopped at the end, also on an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
YESPO_KEY = "yespo-key"
INSPECT_KEY = "bench-inspect-key"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
# Between two measured events: the page is idle when the next one comes.
PAUSE_S = 0.1
# One wait for one row: far above any latency worth measuring.
ROW_TIMEOUT_MS = 10_000

# Records when each journey's row first appears, by the page's own clock.
WATCH_ROWS = """() => {
  window.__rowAt = {};
  new MutationObserver(() => {
    for (const row of document.querySelectorAll('#journeys tr[data-journey]')) {
      const id = row.dataset.journey;
      if (!(id in window.__rowAt)) window.__rowAt[id] = Date.now();
    }
  }).observe(document.getElementById('journeys'), {childList: true});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def wait_ready(http: aiohttp.ClientSession, url: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as resp:
                if resp.status < 500:
                    return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {within_s} s")


@contextlib.asynccontextmanager
async def services(workdir: Path) -> AsyncIterator[tuple[str, str, aiohttp.ClientSession]]:
    standin_port, collector_port = free_port(), free_port()
    standin = f"http://127.0.0.1:{standin_port}"
    collector = f"http://127.0.0.1:{collector_port}"
    env = {
        "COLLECTOR_API_KEYS": API_KEY,
        "COLLECTOR_SPOOL_URL": f"sqlite:///{workdir}/spool.db",
        "COLLECTOR_DEMO": "true",
        "COLLECTOR_INSPECT_KEY": INSPECT_KEY,
        "YESPO_API_URL": standin + "/api",
        "YESPO_API_KEY": YESPO_KEY,
        "YESPO_MAX_RPS": "0",
        "COLLECTOR_RETRY_BASE_MS": "1500",
        "COLLECTOR_RETRY_MAX_DELAY": "3",
    }
    python = sys.executable
    standin_args = [python, "-m", "standin", "--port", str(standin_port), "--api-key", YESPO_KEY]
    collector_args = [python, "-m", "collector", "serve", "--port", str(collector_port)]
    with (
        process(standin_args, {}, workdir / "standin.log"),
        process(collector_args, env, workdir / "collector.log"),
    ):
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, standin + "/_standin/stats")
            await wait_ready(http, collector + "/healthz")
            yield collector, standin, http


def page_view(contact: dict[str, str], location: str) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": str(uuid.uuid4()),
        "contact": contact,
        "properties": {"location": location},
    }


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> int:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(url + "/v1/events", json=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def sign_in(page: Page, collector: str) -> None:
    await page.goto(collector + "/inspect")
    await page.fill("#key", INSPECT_KEY)
    await page.click("#sign-in")
    await page.wait_for_selector('#conn[data-state="live"]')


async def latency(page: Page, http: aiohttp.ClientSession, collector: str, n: int) -> None:
    await page.evaluate(WATCH_ROWS)
    delays: list[float] = []
    for i in range(n):
        event = page_view({"email": f"bench{i}@example.com"}, f"https://shop.example/p/{i}")
        sent_ms = time.time() * 1000
        assert await post(http, collector, event) == 200
        row = f'#journeys tr[data-journey="{event["messageId"]}"]'
        await page.wait_for_selector(row, state="attached", timeout=ROW_TIMEOUT_MS)
        shown_ms = await page.evaluate(f"window.__rowAt[{event['messageId']!r}]")
        delays.append(shown_ms - sent_ms)
        await asyncio.sleep(PAUSE_S)
    delays.sort()
    p95 = delays[max(0, round(0.95 * len(delays)) - 1)]
    print(
        f"post -> row on the page, {n} events: median {statistics.median(delays):.0f} ms,"
        f" p95 {p95:.0f} ms, max {delays[-1]:.0f} ms, min {delays[0]:.0f} ms"
    )


async def scene(page: Page, http: aiohttp.ClientSession, collector: str, standin: str) -> None:
    """Real events of every kind, for the screenshot."""
    await page.click("#clear")
    shop = await page.context.new_page()
    demo = collector + "/demo/"
    await shop.goto(demo)
    await shop.click("#category-link")
    await shop.click("#product-mug-link")
    await shop.click("#add-to-cart")
    await shop.wait_for_selector("#cart-count:text('1')")
    await asyncio.sleep(0.5)  # held: the visitor is not known yet
    await shop.click("#account-link")
    await shop.fill("#login-email", "jane@example.com")
    await shop.click("#log-in")
    await shop.wait_for_selector("#logged-in")
    await shop.close()

    # Yespo refuses one contact's events (a dead letter) and answers 503 once.
    faults = {"reject_if": {"param": "email", "value": "olga@example.com"}}
    async with http.post(standin + "/_standin/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()
    olga = page_view({"email": "olga@example.com"}, "https://shop.example/gone")
    await post(http, collector, olga)
    await asyncio.sleep(0.5)
    async with http.post(standin + "/_standin/faults", json={"status": 503, "times": 1}) as resp:
        assert resp.status == 200, await resp.text()
    await post(http, collector, page_view({"phone": "+380501234567"}, "https://shop.example/sale"))
    await asyncio.sleep(0.3)
    refused = page_view({"email": "jane"}, "https://shop.example/sale")
    await post(http, collector, refused)
    order = {
        "type": "orderCreated",
        "messageId": "ord-2002-created",
        "contact": {"email": "ivan@example.com", "phone": "+380671112233"},
        "properties": {
            "externalOrderId": "2002",
            "status": "INITIALIZED",
            "date": "2026-12-03T09:30:00",
            "totalCost": 25,
            "currency": "UAH",
            "items": [
                {
                    "externalItemId": "mug",
                    "name": "Yespo mug",
                    "quantity": 2,
                    "cost": 12.5,
                    "url": "https://shop.example/mug",
                    "imageUrl": "https://shop.example/mug.png",
                }
            ],
        },
    }
    status = await post(http, collector, order)
    print(f"order posted: HTTP {status}")
    await asyncio.sleep(4)  # the retried one goes through
    await page.click(f'#journeys tr[data-journey="{olga["messageId"]}"]')
    await asyncio.sleep(0.3)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--screenshot", type=Path, help="save the page here (PNG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspect-page-") as tmp:
        async with services(Path(tmp)) as (collector, standin, http), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            page = await context.new_page()
            await sign_in(page, collector)
            await latency(page, http, collector, args.events)
            if args.screenshot:
                await scene(page, http, collector, standin)
                await page.screenshot(path=str(args.screenshot))
                print(f"screenshot: {args.screenshot}")
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
