"""/healthz (the process answers), /readyz (it can take events now) and /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..errors import SpoolError
from ..metrics import Metrics
from ..spool import Spool
from .http import json_response


class Health:
    """The operator endpoints of one collector.

    `delivery_state` says what /readyz reports of delivery; `flush` adds the sources'
    hot-path counts to the Prometheus counters before a scrape."""

    def __init__(
        self,
        spool: Spool,
        metrics: Metrics,
        delivery_state: Callable[[], str],
        flush: Callable[[], None],
    ) -> None:
        self.spool = spool
        self.metrics = metrics
        self.delivery_state = delivery_state
        self.flush = flush

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def readyz(self, request: Request) -> Response:
        spool = self.spool
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
            "held": stats.held,
            "dead_letters": stats.dead,
            "forwarder": self.delivery_state(),
        }
        if spool.durability is not None:
            body["durability"] = spool.durability
        return json_response(body, 503 if problems else 200)

    async def metrics_endpoint(self, request: Request) -> Response:
        metrics = self.metrics
        try:
            stats = await self.spool.stats()
        except SpoolError:
            metrics.errors.labels("spool").inc()
        else:
            metrics.spool_depth.set(stats.depth)
            metrics.spool_dead.set(stats.dead)
            oldest = stats.oldest_received_at
            age = time.time() - oldest / 1000 if oldest is not None else 0.0
            metrics.spool_oldest_age.set(max(age, 0.0))
            metrics.anonymous_held.set(stats.held)
        self.flush()
        return Response(generate_latest(metrics.exposed), media_type=CONTENT_TYPE_LATEST)
