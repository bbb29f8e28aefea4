"""Delivery as one service: the forwarder and its sink, started and stopped the same way
by `collector serve` (in the app's lifespan) and `collector forward` (on its own)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..config import Settings
from ..errors import SpoolError
from ..inspect import OFF, Journal
from ..metrics import Metrics
from ..spool import Spool
from .forwarder import Forwarder
from .policy import RetryPolicy
from .sink import DryRunSink, Sink
from .yespo import YespoClient

log = logging.getLogger("collector")

# How often the log says what was delivered, when anything was: a newcomer sees deliveries
# within seconds, and an idle collector writes nothing.
REPORT_EVERY_S = 10.0


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


def make_forwarder(
    settings: Settings, spool: Spool, metrics: Metrics, journal: Journal = OFF
) -> Forwarder:
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
        lease_ms=settings.lease_s * 1000,
        metrics=metrics,
        journal=journal,
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


class Delivery:
    """The forwarder of one spool, with one `start` and one `stop` for every process that
    delivers. The spool is opened and closed by the caller."""

    def __init__(
        self, settings: Settings, spool: Spool, metrics: Metrics, journal: Journal = OFF
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.forwarder = make_forwarder(settings, spool, metrics, journal)
        self._task: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New entries were committed: look now instead of at the next poll."""
        self.forwarder.notify()

    @property
    def state(self) -> str:
        """What /readyz says of delivery."""
        forwarder = self.forwarder
        return "dry-run" if self.settings.dry_run and not forwarder.paused else forwarder.state

    async def start(self) -> None:
        """Claim the spool for this forwarder and start it. `DeliveryClaimed` (nothing
        started) when another forwarder has it: two would send each other's leased
        entries, and a dry run would delete a real one's events."""
        spool = self.forwarder.spool
        await spool.claim_delivery()
        try:
            log.log(
                logging.WARNING if self.settings.dry_run else logging.INFO,
                delivery_banner(self.settings),
            )
            await self.forwarder.sink.start()
        except BaseException:
            await spool.release_delivery()
            raise
        self._task = asyncio.create_task(self.forwarder.run(), name="forwarder")
        self._reporter = asyncio.create_task(self._report_forever(), name="delivery report")

    def _delivered(self) -> tuple[float, float]:
        """Events Yespo took and events dead-lettered, so far."""
        registry = self.metrics.registry
        sent = registry.get_sample_value("sent_events_total") or 0.0
        dead = sum(
            registry.get_sample_value("events_discarded_total", {"reason": reason}) or 0.0
            for reason in ("rejected", "expired")
        )
        return sent, dead

    async def _report_forever(self) -> None:
        """Every REPORT_EVERY_S, one line of what was delivered since the last, if anything."""
        where = "to the log (dry run)" if self.settings.dry_run else "to Yespo"
        last = self._delivered()
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            now = self._delivered()
            sent, dead = now[0] - last[0], now[1] - last[1]
            if not (sent or dead):
                continue
            last = now
            try:
                waiting = (await self.forwarder.spool.stats()).depth
            except SpoolError:
                waiting = -1
            log.info(
                "delivered %d events %s in the last %gs, %d dead-lettered; %d waiting",
                sent, where, REPORT_EVERY_S, dead, waiting,
            )  # fmt: skip

    async def stop(self) -> None:
        """Graceful: stop leasing, finish in-flight sends within the shutdown timeout, report
        what is left."""
        if self._task is None:
            return
        forwarder, task, self._task = self.forwarder, self._task, None
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
        forwarder.stop(self.settings.shutdown_timeout_s)
        try:
            await task  # run() drains in-flight sends and writes their outcomes
        except Exception:
            log.exception("forwarder failed")
        await forwarder.sink.close()
        try:
            left = (await forwarder.spool.stats()).depth
        except SpoolError:
            left = -1
        await forwarder.spool.release_delivery()
        log.info("forwarder stopped: %d events left in the spool, sent after the next start", left)
