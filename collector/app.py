"""create_app(settings): routes, error replies, and the spool's lifetime."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import __version__
from .config import Settings
from .errors import RequestError, SpoolError, SpoolFull
from .ingest import Ingest, json_response
from .metrics import Metrics
from .spool import Spool, open_spool

log = logging.getLogger("collector")


def create_app(settings: Settings, spool: Spool | None = None) -> Starlette:
    """The collector as an ASGI app. The spool is opened and closed by its lifespan."""
    spool = spool if spool is not None else open_spool(settings)
    metrics = Metrics()
    ingest = Ingest(settings, spool, metrics)

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
        try:
            yield
        finally:
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
        key = "message" if endpoint.startswith("/api/") else "error"
        body = {key: f"events not stored, try again later: {exc.message}"}
        return json_response(body, 503, {"Retry-After": str(exc.retry_after)})

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
            # Delivery to Yespo is the next release's forwarder; until then events wait.
            "forwarder": "not included in this version",
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
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/v1/events", ingest.events, methods=["POST"]),
        Route("/api/v1/event", ingest.yespo_event, methods=["POST"]),
        Route("/api/v2/event", ingest.yespo_event, methods=["POST"]),
        Route("/api/v1/orders", ingest.yespo_orders, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RequestError: request_error, SpoolError: spool_error},
    )
    app.state.settings = settings
    app.state.spool = spool
    app.state.metrics = metrics
    return app
