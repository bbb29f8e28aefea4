"""Browser tests: Debian's Chromium, driven by Playwright, against the real collector.

One browser for the whole session (starting it is the slow part) and a fresh context, with
its own cookies and localStorage, per test. The tests run in the session's event loop
(each module sets ``pytestmark = pytest.mark.asyncio(loop_scope="session")``), and the
collector and the Yespo stand-in run in that same loop.

Pages a test needs beyond the demo shop are fulfilled by `page.route()` on the collector's
own origin, so the script, the endpoint and the cookies stay the real ones.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Route, async_playwright
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from collector.app import create_app
from collector.config import Settings
from standin import StandIn

from ..conftest import ROOT, YESPO_KEY, Running, delivering, make_settings, serve

CHROMIUM = Path("/usr/bin/chromium")
# Debian's build, headless; nothing that phones home or slows a container down.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_CHROMIUM = CHROMIUM.exists()
STATIC = ROOT / "collector" / "static"
WEB_PATH = "/lib/y"  # Settings' default
# Bounds on one wait in a browser test: every step is local, so seconds are plenty.
STEP_TIMEOUT_MS = 10_000
ARRIVAL_S = 10.0
# And on a whole test (Playwright's evaluate() has no timeout of its own).
TEST_TIMEOUT_S = 60.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every browser test gets a deadline: a hung page fails its test, not the whole run."""
    here = Path(__file__).parent
    for item in items:
        test = getattr(item, "obj", None)
        if item.path.parent == here and inspect.iscoroutinefunction(test):
            item.obj = with_deadline(test)  # type: ignore[attr-defined]


def with_deadline(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            await test(*args, **kwargs)

    return run


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:  # a failure, not a skip: .ci/run installs it
        pytest.fail("no /usr/bin/chromium: apt-get install chromium (as .ci/run does)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh visitor. Fails the test if any page threw an uncaught error."""
    ctx = await browser.new_context()
    ctx.set_default_timeout(STEP_TIMEOUT_MS)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    await ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def demo_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path, demo=True, **overrides)


class Tap:
    """ASGI wrapper around the collector: keeps every body POSTed to the browser endpoint,
    whether it came by fetch or by sendBeacon (Playwright does not report the beacons of a
    page that is unloading)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.posts: list[dict[str, Any]] = []
        self.delay_s = 0.0  # hold each POST this long before the collector sees it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != WEB_PATH:
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def tapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.posts.append(json.loads(b"".join(chunks)))
            return message

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await self.app(scope, tapped, send)


@asynccontextmanager
async def collector_at(settings: Settings, port: int = 0) -> AsyncIterator[tuple[Running, Tap]]:
    """The collector on loopback (on `port`, when given), behind a `Tap`."""
    app = create_app(settings)
    tap = Tap(app)
    async with serve(tap, port) as url, aiohttp.ClientSession() as http:
        yield Running(url, app, settings, http), tap


@asynccontextmanager
async def pipeline(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Running, StandIn, Tap]]:
    """The collector (demo on, delivery on), the Yespo stand-in it delivers to, and the
    tap that sees what the browser POSTed to it."""
    async with (
        StandIn(api_key=YESPO_KEY) as standin,
        collector_at(forwarding(tmp_path, standin, **overrides)) as (c, tap),
    ):
        yield c, standin, tap


def forwarding(tmp_path: Path, standin: StandIn, **overrides: Any) -> Settings:
    """Demo settings that deliver to the stand-in, quickly retried."""
    return delivering(tmp_path, standin.url, demo=True, **overrides)


# -- pages -------------------------------------------------------------------------------


def snippet(**init: Any) -> str:
    """collector/static/snippet.html, with init's options (site key "demo")."""
    options = json.dumps({"siteKey": "demo", "endpoint": WEB_PATH, **init})
    return (
        "<script>\n"
        "!function(w,d,n,s){if(w[n])return;var f=w[n]=function(){f.q.push(arguments)};f.q=[];\n"
        'var e=d.createElement("script");e.async=1;e.src=s;d.head.appendChild(e)}'
        f'(window,document,"yc","{WEB_PATH}.js");\n'
        f'yc("init", {options});\n'
        "</script>\n"
    )


def html(head: str = "", body: str = "", title: str = "Test page") -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"{head}</head><body>{body}</body></html>"
    )


async def add_page(ctx: BrowserContext, url: str, page_html: str) -> None:
    """Serve `page_html` at `url` (on the collector's origin) to every page of the context."""

    async def fulfil(route: Route) -> None:
        await route.fulfill(body=page_html, content_type="text/html; charset=utf-8")

    await ctx.route(url, fulfil)


def demo_file(name: str) -> tuple[bytes, str]:
    """A demo shop file as the collector serves it: placeholders filled in."""
    path = STATIC / "demo" / name
    body = path.read_bytes()
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
    if path.suffix == ".html":
        body = body.replace(b"__YC_SCRIPT__", f"{WEB_PATH}.js".encode())
        body = body.replace(b"__YC_ENDPOINT__", WEB_PATH.encode())
    return body, types.get(path.suffix, "image/svg+xml")


async def serve_files_from_disk(ctx: BrowserContext, base: str) -> None:
    """The demo shop and the script come from disk, not from the collector: pages keep
    loading while the collector is down. Only the endpoint stays on the network."""

    async def fulfil(route: Route) -> None:
        path = route.request.url.removeprefix(base).split("?")[0]
        if path == WEB_PATH + ".js":
            body, media_type = (STATIC / "y.js").read_bytes(), "text/javascript"
        else:
            name = path.removeprefix("/demo/") or "index.html"
            body, media_type = demo_file(name)
        await route.fulfill(body=body, content_type=media_type)

    await ctx.route(f"{base}/demo/**", fulfil)
    await ctx.route(f"{base}{WEB_PATH}.js", fulfil)


# -- what was sent and what arrived -------------------------------------------------------


def posted_events(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for body in posts for event in body["batch"]]


def yespo_events(standin: StandIn) -> list[tuple[str, dict[str, str]]]:
    """What Yespo got: (eventTypeKey, params by name), in arrival order."""
    out = []
    for record in standin.events:
        body = orjson.loads(record.raw)
        out.append((body["eventTypeKey"], {p["name"]: p["value"] for p in body["params"]}))
    return out


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within_s: float = ARRIVAL_S
) -> None:
    """Wait until `check()` (or what it awaits to) is true; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        ok = check()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def settled(standin: StandIn, count: int, quiet_s: float = 1.0) -> None:
    """`count` events arrived at the stand-in, and no more came within `quiet_s`."""
    await standin.wait_for_events(count, within_s=ARRIVAL_S)
    await asyncio.sleep(quiet_s)
    assert len(standin.events) == count, yespo_events(standin)
