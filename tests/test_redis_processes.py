"""The Redis issue's acceptance run (#13): three `collector serve` processes on one
redis-server (appendfsync always) behind a sender that goes round the three and tries the
next on failure; the stand-in fails 20% of requests and answers 429 to every 9th; 60
orders x 3 status steps and 30 contacts x 10 page views; collector 1 SIGKILLed mid-way
and restarted 5 s later. Every order's and every contact's events reach Yespo complete and
in order, and more than one collector delivered."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from standin import Faults, StandIn

from .conftest import API_KEY, YESPO_KEY, Process, free_port
from .redis_server import RedisServer
from .test_delivery import order_event

ORDERS = 60
CONTACTS = 30
VIEWS = 10
RESTART_AFTER_S = 5
STEPS = ["orderCreated", "orderUpdated", "orderDelivered"]


def env_for(standin: StandIn, redis_url: str) -> dict[str, str]:
    return {
        "COLLECTOR_API_KEYS": API_KEY,
        "COLLECTOR_SPOOL_URL": redis_url,
        "YESPO_API_URL": standin.url,
        "YESPO_API_KEY": YESPO_KEY,
        "YESPO_MAX_RPS": "0",
        "YESPO_TIMEOUT": "1",
        "COLLECTOR_LEASE": "2",  # the killed collector's leases go to the others after 2 s
        "COLLECTOR_RETRY_BASE_MS": "50",
        "COLLECTOR_RETRY_MAX_DELAY": "1",
    }


def page_view(contact: int, n: int) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": f"pv-{contact}-{n}",
        "contact": {"email": f"c{contact}@example.com"},
        "properties": {"location": f"https://shop.example/{n}"},
    }


async def post_round_robin(
    http: aiohttp.ClientSession, collectors: list[Process], start: int, event: dict[str, Any]
) -> None:
    """Post to the next collector; on a failure, the one after it, until one takes it."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    deadline = time.monotonic() + 30
    n = start
    while time.monotonic() < deadline:
        c = collectors[n % len(collectors)]
        n += 1
        try:
            async with http.post(c.url + "/v1/events", json=event, headers=headers) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no collector took {event['messageId']}")


def collapse(seen: list[str]) -> list[str]:
    """At least once: a send in flight at the kill may arrive again right after itself."""
    return [x for i, x in enumerate(seen) if i == 0 or seen[i - 1] != x]


async def sent_events(http: aiohttp.ClientSession, c: Process) -> float:
    async with http.get(c.url + "/metrics") as resp:
        found = re.search(r"^\w*sent_events_total (\S+)$", await resp.text(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_three_collectors_one_killed_deliver_every_key_complete_and_in_order(
    tmp_path: Path, processes: list[Process], redis_server: RedisServer
) -> None:
    redis_server.flush()
    async with StandIn(api_key=YESPO_KEY) as standin, aiohttp.ClientSession() as http:
        standin.faults = Faults(status=503, rate=0.2, throttle_every=9, delay_ms=5, seed=13)
        env = env_for(standin, redis_server.url)
        collectors = [Process(free_port(), env, tmp_path / f"c{i}.log") for i in range(3)]
        processes.extend(collectors)
        await asyncio.gather(*(c.wait_ready() for c in collectors))

        events = [order_event(step, n) for step in STEPS for n in range(ORDERS)]
        events += [page_view(c, n) for n in range(VIEWS) for c in range(CONTACTS)]
        half = len(events) // 2
        for i, e in enumerate(events[:half]):
            await post_round_robin(http, collectors, i, e)
        before = await sent_events(http, collectors[0])
        collectors[0].kill()  # mid-way: some of its leases are in flight
        killed_at = time.monotonic()

        async def post_the_rest() -> None:
            for i, e in enumerate(events[half:], half):
                await post_round_robin(http, collectors, i, e)

        posting = asyncio.create_task(post_the_rest())  # meanwhile, to the two left
        await asyncio.sleep(RESTART_AFTER_S - (time.monotonic() - killed_at))
        restarted = Process(collectors[0].port, env, tmp_path / "c0.log")
        processes.append(restarted)
        await restarted.wait_ready()
        collectors[0] = restarted
        await posting

        await standin.wait_for_events(len(events), within_s=60)
        deadline = time.monotonic() + 30
        orders: dict[str, list[str]] = {}
        views: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            orders, views = {}, {}
            for r in standin.events:
                body = orjson.loads(r.raw)
                if body["eventTypeKey"] == "pageViewed":
                    page = re.search(rb"shop\.example/(\d+)", r.raw)
                    assert page is not None
                    views.setdefault(body["keyValue"], []).append(page.group(1).decode())
                else:
                    oid = next(p["value"] for p in body["params"] if p["name"] == "externalOrderId")
                    orders.setdefault(str(oid), []).append(body["eventTypeKey"])
            complete = len(orders) == ORDERS and len(views) == CONTACTS
            views_all = all(len(set(v)) == VIEWS for v in views.values())
            if complete and views_all and all(len(set(s)) == 3 for s in orders.values()):
                break
            await asyncio.sleep(0.1)
        assert len(orders) == ORDERS and all(collapse(s) == STEPS for s in orders.values()), orders
        in_order = [str(n) for n in range(VIEWS)]
        assert len(views) == CONTACTS and all(collapse(v) == in_order for v in views.values()), (
            views
        )
        delivered = [await sent_events(http, c) for c in collectors]
        delivered[0] += before  # what collector 1 sent before it was killed
        assert sum(1 for n in delivered if n > 0) >= 2, delivered
