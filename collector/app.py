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

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .config import Settings
from .delivery import Delivery
from .errors import CollectorError, DeliveryClaimed, Overloaded
from .inspect import Journal
from .inspect.journal import running as recording
from .metrics import Metrics
from .sources.browser import Browser
from .sources.events_api import EventsApi
from .sources.segment import PATHS as SEGMENT_PATHS
from .sources.segment import SEGMENT, Segment
from .sources.visitors import sweep_forever
from .sources.yespo_compat import YespoCompat
from .spool import Spool, open_spool
from .web.health import Health
from .web.http import OWN, YESPO, ErrorForm, error_reply, method_not_allowed, not_found, refusing
from .web.inspect import Inspector
from .web.openapi import openapi
from .web.static import Assets

log = logging.getLogger("collector")


class CollectorApp(Starlette):
    """Starlette, with POST /v1/events (the busiest endpoint by far) handed straight to its
    bare ASGI handler, past the middleware stack; it answers its own errors.

    Ingest requests (`ingest`: path -> the form its source answers in) are admitted up to
    `max_in_flight` at once; past that each is answered 503 + Retry-After at once, before
    its body is read, instead of waiting behind seconds of work (and /healthz with it)."""

    def __init__(
        self,
        events: ASGIApp,
        ingest: dict[str, ErrorForm],
        max_in_flight: int,
        metrics: Metrics,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._events = events
        self._ingest = ingest
        self._max_in_flight = max_in_flight
        self._metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, plain_start_failures(send))
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        path = scope["path"]
        form = self._ingest.get(path)
        if form is None:
            await super().__call__(scope, receive, send)
            return
        if self.in_flight >= self._max_in_flight:
            await self._refuse(path, form, send)
            return
        self.in_flight += 1
        try:
            if path == "/v1/events":
                await self._events(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, path: str, form: ErrorForm, send: Send) -> None:
        busy = Overloaded(f"{self._max_in_flight} requests in hand", retry_after=1)
        status, body, headers = error_reply(busy, form, self._metrics, path)
        data = orjson.dumps(body)
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})


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
    journal = Journal(
        settings.inspect_key is not None,
        settings.inspect_buffer,
        settings.inspect_age_s,
        shared=spool.step_stream(),
        offered=lambda: sum(c.received_in_all for source in sources for c in source.counters),
    )
    delivery = Delivery(settings, spool, metrics, journal) if settings.forward else None
    notify = delivery.notify if delivery else None
    events_api = EventsApi(settings, spool, metrics, notify, journal)
    yespo = YespoCompat(settings, spool, metrics, notify, journal)
    browser = Browser(settings, spool, metrics, notify, journal)
    segment = Segment(settings, spool, metrics, notify, journal)
    assets = Assets(settings)
    sources = (events_api, yespo, browser, segment)

    def flush_counters() -> None:
        for source in sources:
            source.flush_counters()

    def delivery_state() -> str:
        return delivery.state if delivery else "off (run 'collector forward')"

    health = Health(spool, metrics, delivery_state, flush_counters)
    description = openapi(settings)
    document = orjson.dumps(description)

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

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
                "browsers: %sevents at %s, %d site key(s)%s",
                f"script at {settings.web_path}.js, " if assets.script else "",
                settings.web_path, len(browser.sites),
                "; demo shop at /demo/" if assets.demo else "",
            )  # fmt: skip
        for missing in assets.missing:  # announced above only what is there
            log.warning("%s", missing)
        sweeper = asyncio.create_task(sweep_forever(settings, spool, metrics), name="sweeper")
        try:
            async with recording(journal):
                yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if delivery is not None:
                await delivery.stop()
            await spool.close()
            log.info("spool closed")

    # The ingest endpoints: path, the form its source answers in, the handler.
    ingest_routes = [
        ("/api/v1/event", YESPO, yespo.event),
        ("/api/v2/event", YESPO, yespo.event),
        ("/api/v1/orders", YESPO, yespo.orders),
        (settings.web_path, OWN, browser.events),
        *((path, SEGMENT, segment.endpoint(path)) for path in SEGMENT_PATHS),
    ]
    ingest = {"/v1/events": OWN, **{path: form for path, form, _ in ingest_routes}}
    routes = [
        Route("/v1/events", functools.partial(events_api.events), methods=["POST"]),  # bare ASGI
        *(Route(p, refusing(f, metrics, fn), methods=["POST"]) for p, f, fn in ingest_routes),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route(settings.web_path + ".js", assets.serve_script, methods=["GET"]),
        Route(settings.web_path, browser.preflight, methods=["OPTIONS"]),
    ]
    if settings.inspect_key is not None:
        routes += Inspector(settings, spool, journal, assets.static_dir, notify).routes()
    if settings.demo:

        async def demo_home(request: Request) -> Response:
            return RedirectResponse("/demo/")

        routes += [
            Route("/demo", demo_home, methods=["GET"]),
            Route("/demo/{name:path}", assets.serve_demo, methods=["GET"]),
        ]
    app = CollectorApp(
        events_api.events,
        ingest,
        settings.max_in_flight,
        metrics,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ClientDisconnect: client_gone, 404: not_found, 405: method_not_allowed},
    )
    app.state.settings = settings
    app.state.spool = spool
    app.state.metrics = metrics
    app.state.forwarder = delivery.forwarder if delivery else None
    app.state.browser = browser
    app.state.openapi = description
    app.state.journal = journal
    return app
