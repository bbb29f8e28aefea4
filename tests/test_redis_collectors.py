"""Two collectors on one Redis, both taking events and both delivering, to a Yespo
stand-in that fails some requests: every contact's and every order's events arrive
complete and in order, and both collectors delivered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from standin import Faults, StandIn

from .conftest import YESPO_KEY, Running, delivering, running
from .redis_server import RedisServer
from .test_delivery import eventually, order_event, send


@asynccontextmanager
async def two_collectors(
    tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[tuple[list[Running], StandIn]]:
    redis_server.flush()
    async with AsyncExitStack() as stack:
        standin = await stack.enter_async_context(StandIn(api_key=YESPO_KEY))
        collectors = []
        for n in range(2):
            settings = delivering(tmp_path / str(n), standin.url, spool_url=redis_server.url)
            collectors.append(await stack.enter_async_context(running(settings)))
        yield collectors, standin


def page_view(contact: int, n: int) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": f"pv-{contact}-{n}",
        "contact": {"email": f"c{contact}@example.com"},
        "properties": {"location": f"https://shop.example/{n}"},
    }


def param(raw: bytes, name: str) -> str:
    body = orjson.loads(raw)
    return str(next(p["value"] for p in body["params"] if p["name"] == name))


async def sent_events(c: Running) -> float:
    async with c.http.get(c.url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(r"^collector_sent_events_total (\S+)$", text, re.M) or re.search(
        r"^\w*sent_events_total (\S+)$", text, re.M
    )
    return float(found.group(1)) if found else 0.0


async def test_two_collectors_deliver_every_key_in_order_through_failures(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_collectors(tmp_path, redis_server) as (collectors, standin):
        standin.faults = Faults(status=503, rate=0.2, seed=13)
        stages = ["orderCreated", "orderUpdated", "orderDelivered"]
        for i, stage in enumerate(stages):  # each step through the other collector
            await send(collectors[i % 2], [order_event(stage, n) for n in range(20)])
        for n in range(6):  # each contact's views alternate between the collectors
            await send(collectors[n % 2], [page_view(c, n) for c in range(10)])
        await standin.wait_for_events(20 * 3 + 10 * 6, within_s=30)

        orders: dict[str, list[str]] = {}
        views: dict[str, list[str]] = {}
        for r in standin.events:
            body = orjson.loads(r.raw)
            if body["eventTypeKey"] == "pageViewed":
                page = re.search(rb"shop\.example/(\d+)", r.raw)
                assert page is not None, r.raw
                views.setdefault(body["keyValue"], []).append(page.group(1).decode())
            else:
                orders.setdefault(param(r.raw, "externalOrderId"), []).append(body["eventTypeKey"])
        assert len(orders) == 20 and all(steps == stages for steps in orders.values()), orders
        in_order = [str(n) for n in range(6)]
        assert len(views) == 10 and all(seen == in_order for seen in views.values()), views

        async def readyz_says_always() -> bool:
            async with collectors[1].http.get(collectors[1].url + "/readyz") as resp:
                return (await resp.json()).get("durability") == "appendonly yes, appendfsync always"

        await eventually(readyz_says_always)
        assert all([await sent_events(c) > 0 for c in collectors])


async def test_max_rps_is_the_ceiling_of_all_collectors_together(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    rate, events = 20, 60
    async with AsyncExitStack() as stack:
        standin = await stack.enter_async_context(StandIn(api_key=YESPO_KEY))
        collectors = []
        for n in range(2):
            settings = delivering(
                tmp_path / str(n), standin.url, spool_url=redis_server.url, yespo_max_rps=rate
            )
            collectors.append(await stack.enter_async_context(running(settings)))
        for n in range(events):
            await send(collectors[n % 2], [page_view(n, 0)])
        arrived = await standin.wait_for_events(events, within_s=30)
        times = sorted(r.at for r in arrived)
        # Each collector alone may send `rate` a second: together they would send twice
        # that. The shared bucket lets both together send `rate` a second after its burst
        # (rate / 10), so the whole run takes at least this long.
        burst = rate // 10
        assert times[-1] - times[0] >= (events - burst - 1) * 1000 / rate * 0.9, times
        assert all([await sent_events(c) > 0 for c in collectors])
