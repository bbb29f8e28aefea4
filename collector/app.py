"""create_app(settings): routes, error replies, and the spool's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .config import Settings
from .errors import RequestError, SpoolError, SpoolFull
from .forward import DryRunSink, Forwarder, RetryPolicy, Sink
from .ingest import Ingest, json_response, spool_error_body
from .metrics import Metrics
from .spool import Spool, open_spool
from .visitors import sweep_forever
from .web import Web
from .yespo import YespoClient

log = logging.getLogger("collector")


def make_sink(settings: Settings) -> Sink:
    """Yespo's API, or the log when no YESPO_API_KEY is set (dry run)."""
    if settings.yespo_api_key:
        return YespoClient(
            settings.yespo_api_url,
            settings.yespo_api_key,
            event_version=settings.yespo_event_api,
            timeout_s=settings.yespo_timeout_s,
            max_connections=settings.yespo_concurrency,
        )
    return DryRunSink()


def make_forwarder(settings: Settings, spool: Spool, metrics: Metrics) -> Forwarder:
    retry = RetryPolicy(
        base_ms=settings.retry_base_ms,
        max_delay_ms=settings.retry_max_delay_s * 1000,
        max_age_ms=settings.max_event_age_s * 1000,
    )
    return Forwarder(
        spool,
        make_sink(settings),
        concurrency=settings.yespo_concurrency,
        max_rps=settings.yespo_max_rps,
        retry=retry,
        lease_ms=max(60_000, int(settings.yespo_timeout_s * 3000)),
        metrics=metrics,
    )


def delivery_banner(settings: Settings) -> str:
    if settings.dry_run:
        return (
            "DRY RUN: no YESPO_API_KEY set. Events are validated and spooled, and"
            " 'delivered' to this log in their Yespo form; nothing is sent to Yespo"
        )
    rps = f"at most {settings.yespo_max_rps:g} req/s" if settings.yespo_max_rps else "no rate limit"
    return (
        f"delivering to {settings.yespo_api_url} ({settings.yespo_event_api}/event),"
        f" {settings.yespo_concurrency} in flight, {rps}"
    )


async def stop_forwarder(forwarder: Forwarder, task: asyncio.Task[None], timeout_s: float) -> None:
    """Graceful: stop leasing, finish in-flight sends within the timeout, report the rest."""
    forwarder.stop(timeout_s)
    try:
        await task  # run() drains in-flight sends and writes their outcomes
    except Exception:
        log.exception("forwarder failed")
    await forwarder.sink.close()
    try:
        left = (await forwarder.spool.stats()).depth
    except SpoolError:
        left = -1
    log.info("forwarder stopped: %d events left in the spool, sent after the next start", left)


class CollectorApp(Starlette):
    """Starlette, with POST /v1/events (the busiest endpoint by far) handed straight to its
    bare ASGI handler, past the middleware stack; it answers its own errors."""

    def __init__(self, events: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events" and scope["method"] == "POST":
            await self._events(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings, spool: Spool | None = None) -> Starlette:
    """The collector as an ASGI app. The spool and forwarder live as long as its lifespan."""
    spool = spool if spool is not None else open_spool(settings)
    metrics = Metrics()
    forwarder = make_forwarder(settings, spool, metrics) if settings.forward else None
    ingest = Ingest(settings, spool, metrics, forwarder.notify if forwarder else None)
    web = Web(settings, spool, metrics, forwarder.notify if forwarder else None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await spool.open()
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
        task = None
        if forwarder is not None:
            log.log(
                logging.WARNING if settings.dry_run else logging.INFO, delivery_banner(settings)
            )
            await forwarder.sink.start()
            task = asyncio.create_task(forwarder.run(), name="forwarder")
        else:
            log.info("delivery is off here (--no-forward): run 'collector forward' beside it")
        if web.sites:
            log.info(
                "browsers: script at %s.js, events at %s, %d site key(s)%s",
                settings.web_path, settings.web_path, len(web.sites),
                "; demo shop at /demo/" if settings.demo else "",
            )  # fmt: skip
        sweeper = asyncio.create_task(sweep_forever(settings, spool, metrics), name="sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if forwarder is not None and task is not None:
                await stop_forwarder(forwarder, task, settings.shutdown_timeout_s)
            await spool.close()
            log.info("spool closed")

    async def request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        endpoint = request.url.path
        metrics.refused_requests.labels(endpoint, str(exc.status_code)).inc()
        headers = {}
        if exc.status_code == 401:
            scheme = "Basic" if endpoint.startswith("/api/") else "Bearer"
            headers["WWW-Authenticate"] = f'{scheme} realm="collector"'
        # Yespo's own error bodies carry `message`; ours carry `error`.
        key = "message" if endpoint.startswith("/api/") else "error"
        return json_response({key: exc.message}, exc.status_code, headers)

    async def spool_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SpoolError)
        endpoint = request.url.path
        metrics.refused_requests.labels(endpoint, "503").inc()
        metrics.errors.labels("spool_full" if isinstance(exc, SpoolFull) else "spool").inc()
        body = spool_error_body(exc, "message" if endpoint.startswith("/api/") else "error")
        return json_response(body, 503, {"Retry-After": str(exc.retry_after)})

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client left before its body was whole: nobody reads the answer, and it is not
        # an error of ours (flaky mobile networks do it all the time).
        log.debug("%s: the client went away before sending its whole body", request.url.path)
        return Response(status_code=400)

    def forwarder_state() -> str:
        if forwarder is None:
            return "off (run 'collector forward')"
        return "dry-run" if settings.dry_run and not forwarder.paused else forwarder.state

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> Response:
        problems = []
        try:
            await spool.check()
            stats = await spool.stats()
        except SpoolError as exc:
            return json_response({"ready": False, "spool": exc.message}, 503)
        if stats.depth >= spool.max_events:
            problems.append(f"spool full ({stats.depth} of {spool.max_events})")
        body = {
            "ready": not problems,
            "spool": problems[0] if problems else "writable",
            "depth": stats.depth,
            "dead_letters": stats.dead,
            "forwarder": forwarder_state(),
        }
        return json_response(body, 503 if problems else 200)

    async def metrics_endpoint(request: Request) -> Response:
        try:
            stats = await spool.stats()
        except SpoolError:
            metrics.errors.labels("spool").inc()
        else:
            metrics.spool_depth.set(stats.depth)
            metrics.spool_dead.set(stats.dead)
            oldest = stats.oldest_received_at
            age = time.time() - oldest / 1000 if oldest is not None else 0.0
            metrics.spool_oldest_age.set(max(age, 0.0))
            metrics.anonymous_held.set(stats.held)
        ingest.flush_counters()
        web.flush_counters()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/v1/events", functools.partial(ingest.events), methods=["POST"]),  # bare ASGI
        Route("/api/v1/event", ingest.yespo_event, methods=["POST"]),
        Route("/api/v2/event", ingest.yespo_event, methods=["POST"]),
        Route("/api/v1/orders", ingest.yespo_orders, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route(settings.web_path + ".js", web.serve_script, methods=["GET"]),
        Route(settings.web_path, web.events, methods=["POST"]),
        Route(settings.web_path, web.preflight, methods=["OPTIONS"]),
    ]
    if settings.demo:

        async def demo_home(request: Request) -> Response:
            return RedirectResponse("/demo/")

        routes += [
            Route("/demo", demo_home, methods=["GET"]),
            Route("/demo/{name:path}", web.serve_demo, methods=["GET"]),
        ]
    app = CollectorApp(
        ingest.events,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RequestError: request_error,
            SpoolError: spool_error,
            ClientDisconnect: client_gone,
        },
    )
    app.state.settings = settings
    app.state.spool = spool
    app.state.metrics = metrics
    app.state.forwarder = forwarder
    app.state.web = web
    return app
