"""create_app(settings): the composition root. Sources, delivery and the web endpoints
around one spool, and the spool's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .config import Settings
from .delivery import Delivery
from .errors import CollectorError, DeliveryClaimed
from .metrics import Metrics
from .sources.browser import Browser
from .sources.events_api import EventsApi
from .sources.visitors import sweep_forever
from .sources.yespo_compat import YespoCompat
from .spool import Spool, open_spool
from .web.health import Health
from .web.http import OWN, YESPO, refusing
from .web.static import Assets

log = logging.getLogger("collector")


class CollectorApp(Starlette):
    """Starlette, with POST /v1/events (the busiest endpoint by far) handed straight to its
    bare ASGI handler, past the middleware stack; it answers its own errors."""

    def __init__(self, events: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events" and scope["method"] == "POST":
            await self._events(scope, receive, send)
        elif scope["type"] == "lifespan":
            await super().__call__(scope, receive, plain_start_failures(send))
        else:
            await super().__call__(scope, receive, send)


def plain_start_failures(send: Send) -> Send:
    """The lifespan's `send`, with our own start-up errors told by their message alone.

    uvicorn logs the message of a failed start-up, which starlette fills with the
    traceback. For a `CollectorError` (a spool that cannot open, or that another process
    delivers from) the message says all there is to say, and a traceback would bury it."""

    async def send_plain(message: Message) -> None:
        # starlette sends the failure from inside its `except`: the error is being handled.
        error = sys.exception()
        if message["type"] == "lifespan.startup.failed" and isinstance(error, CollectorError):
            message = {**message, "message": str(error)}
        await send(message)

    return send_plain


async def client_gone(request: Request, exc: Exception) -> Response:
    # The client left before its body was whole: nobody reads the answer, and it is not
    # an error of ours (flaky mobile networks do it all the time).
    log.debug("%s: the client went away before sending its whole body", request.url.path)
    return Response(status_code=400)


def create_app(settings: Settings, spool: Spool | None = None) -> Starlette:
    """The collector as an ASGI app. The spool and delivery live as long as its lifespan."""
    spool = spool if spool is not None else open_spool(settings)
    metrics = Metrics()
    delivery = Delivery(settings, spool, metrics) if settings.forward else None
    notify = delivery.notify if delivery else None
    events_api = EventsApi(settings, spool, metrics, notify)
    yespo = YespoCompat(settings, spool, metrics, notify)
    browser = Browser(settings, spool, metrics, notify)
    assets = Assets(settings)
    sources = (events_api, yespo, browser)

    def flush_counters() -> None:
        for source in sources:
            source.flush_counters()

    def delivery_state() -> str:
        return delivery.state if delivery else "off (run 'collector forward')"

    health = Health(spool, metrics, delivery_state, flush_counters)

    async def start_delivery() -> None:
        if delivery is None:
            log.info("delivery is off here (--no-forward): run 'collector forward' beside it")
            return
        try:
            await delivery.start()
        except DeliveryClaimed as exc:
            # This process can still take events in beside the one that delivers.
            hint = "stop it first, or start this one with --no-forward to only take events in"
            raise DeliveryClaimed(exc.spool, exc.holder, hint) from None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await spool.open()
        try:
            stats = await spool.stats()
            log.info(
                "collector %s: spool %s (%d waiting, %d dead letters), %d API key(s)",
                __version__, settings.spool_url, stats.depth, stats.dead, len(settings.api_keys),
            )  # fmt: skip
            if settings.generated_key:
                log.warning(
                    "no COLLECTOR_API_KEYS configured: this run accepts the key %s",
                    settings.api_keys[0],
                )
            await start_delivery()
        except BaseException:
            await spool.close()
            raise
        if browser.sites:
            log.info(
                "browsers: script at %s.js, events at %s, %d site key(s)%s",
                settings.web_path, settings.web_path, len(browser.sites),
                "; demo shop at /demo/" if settings.demo else "",
            )  # fmt: skip
        sweeper = asyncio.create_task(sweep_forever(settings, spool, metrics), name="sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if delivery is not None:
                await delivery.stop()
            await spool.close()
            log.info("spool closed")

    routes = [
        Route("/v1/events", functools.partial(events_api.events), methods=["POST"]),  # bare ASGI
        Route("/api/v1/event", refusing(YESPO, metrics, yespo.event), methods=["POST"]),
        Route("/api/v2/event", refusing(YESPO, metrics, yespo.event), methods=["POST"]),
        Route("/api/v1/orders", refusing(YESPO, metrics, yespo.orders), methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics_endpoint, methods=["GET"]),
        Route(settings.web_path + ".js", assets.serve_script, methods=["GET"]),
        Route(settings.web_path, refusing(OWN, metrics, browser.events), methods=["POST"]),
        Route(settings.web_path, browser.preflight, methods=["OPTIONS"]),
    ]
    if settings.demo:

        async def demo_home(request: Request) -> Response:
            return RedirectResponse("/demo/")

        routes += [
            Route("/demo", demo_home, methods=["GET"]),
            Route("/demo/{name:path}", assets.serve_demo, methods=["GET"]),
        ]
    app = CollectorApp(
        events_api.events,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ClientDisconnect: client_gone},
    )
    app.state.settings = settings
    app.state.spool = spool
    app.state.metrics = metrics
    app.state.forwarder = delivery.forwarder if delivery else None
    app.state.browser = browser
    return app
