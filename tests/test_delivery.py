"""End to end: collector and Yespo stand-in both running, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.delivery import Forwarder, service
from collector.errors import SpoolError
from collector.spool import Spool
from standin import Faults, Recorded, RejectIf, StandIn

from .conftest import YESPO_KEY, Running, delivering, make_settings, running


@asynccontextmanager
async def pipeline(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Running, StandIn]]:
    async with (
        StandIn(api_key=YESPO_KEY) as standin,
        running(delivering(tmp_path, standin.url, **overrides)) as c,
    ):
        breaker = forwarder(c).breaker
        breaker.auth_probe_ms = breaker.outage_probe_ms = (100, 400)
        yield c, standin


def forwarder(c: Running) -> Forwarder:
    f: Forwarder = c.app.state.forwarder
    return f


def spool(c: Running) -> Spool:
    s: Spool = c.app.state.spool
    return s


def page_view(n: int) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": f"pv-{n}",
        "contact": {"email": f"visitor{n}@example.com"},
        "properties": {"location": f"https://shop.example/p/{n}"},
    }


def order_event(kind: str, order: int) -> dict[str, Any]:
    props: dict[str, Any] = {"externalOrderId": f"ord-{order}"}
    if kind == "orderCreated":
        props |= {"totalCost": 10, "status": "INITIALIZED", "date": "2026-11-23T10:00:00"}
    if kind == "orderUpdated":
        props |= {"status": "IN_PROGRESS"}
    return {
        "type": kind,
        "messageId": f"{kind}-{order}",
        "contact": {
            "externalCustomerId": f"cust-{order % 7}",
            "email": f"c{order % 7}@example.com",
        },
        "properties": props,
    }


async def send(c: Running, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        status, reply = await c.post("/v1/events", {"batch": events[start : start + 500]})
        assert status == 200 and not reply["rejected"], reply


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def key_values(standin: StandIn) -> Counter[str]:
    return Counter(orjson.loads(r.raw)["keyValue"] for r in standin.events)


async def test_accepted_events_arrive_at_yespo_in_yespo_form_and_leave_the_spool(
    tmp_path: Path,
) -> None:
    async with pipeline(tmp_path) as (c, standin):
        await send(c, [page_view(1), page_view(2)])
        arrived = await standin.wait_for_events(2)
        bodies = sorted((orjson.loads(r.raw) for r in arrived), key=lambda b: b["keyValue"])
        assert bodies[0] == {
            "eventTypeKey": "pageViewed",
            "keyValue": "visitor1@example.com",
            "params": [
                {"name": "email", "value": "visitor1@example.com"},
                {"name": "page", "value": '{"location":"https://shop.example/p/1"}'},
            ],
        }
        assert {r.path for r in arrived} == {"/api/v1/event"}
        await eventually(lambda: _depth_is(c, 0))


async def _depth_is(c: Running, depth: int) -> bool:
    return (await spool(c).stats()).depth == depth


async def test_outage_then_recovery_delivers_every_event_once(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as (c, standin):
        standin.faults = Faults(status=503)
        await send(c, [page_view(n) for n in range(300)])
        await asyncio.sleep(2)  # several seconds of outage, with retries backing off
        assert standin.events == []
        stats = await spool(c).stats()
        assert (stats.depth, stats.dead) == (300, 0)

        standin.faults = Faults()
        await standin.wait_for_events(300, within_s=15)
        await eventually(lambda: _depth_is(c, 0))
        counts = key_values(standin)
        assert len(counts) == 300 and set(counts.values()) == {1}


async def test_lost_replies_cause_duplicates_only_for_those_requests(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as (c, standin):
        standin.faults = Faults(drop_reply=0.2, seed=7)
        await send(c, [page_view(n) for n in range(200)])
        await eventually(lambda: _depth_is(c, 0))
        counts = key_values(standin)
        assert len(counts) == 200  # everything arrived
        dropped = standin.stats()["requests"]["/api/v1/event"].get("dropped", 0)
        assert dropped > 0
        assert sum(counts.values()) - len(counts) <= dropped


async def test_each_orders_events_arrive_in_order_through_5xx_and_429(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as (c, standin):

        async def flaky() -> None:
            plans = [
                Faults(status=503, rate=0.3, seed=1),
                Faults(status=429, rate=0.3, retry_after=0, seed=2),
            ]
            for i in range(100_000):
                standin.faults = plans[i % 2]
                await asyncio.sleep(0.01)  # both kinds of failure within any delivery burst

        chaos = asyncio.create_task(flaky())
        stages = ["orderCreated", "orderUpdated", "orderDelivered"]
        try:
            for stage in stages:  # each stage a separate request, all orders interleaved
                await send(c, [order_event(stage, n) for n in range(40)])
            await standin.wait_for_events(120, within_s=20)
            await eventually(lambda: _depth_is(c, 0))
        finally:
            chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos
        retried = standin.stats()["requests"]["/api/v1/event"]
        assert retried.get("503", 0) > 0 and retried.get("429", 0) > 0
        seen: dict[str, list[str]] = {}
        for r in standin.events:
            body = orjson.loads(r.raw)
            order = next(p["value"] for p in body["params"] if p["name"] == "externalOrderId")
            seen.setdefault(order, []).append(body["eventTypeKey"])
        assert len(seen) == 40
        assert all(arrivals == stages for arrivals in seen.values()), seen


async def test_wrong_key_pauses_delivery_loses_nothing_and_resumes(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as (c, standin):
        standin.api_key = "rotated"  # the collector's key is now wrong: 401
        await send(c, [page_view(n) for n in range(50)])
        await eventually(lambda: _paused(c))
        async with c.http.get(c.url + "/readyz") as resp:
            ready = await resp.json()
        assert ready["forwarder"].startswith("paused") and "401" in ready["forwarder"]
        await asyncio.sleep(1)
        stats = await spool(c).stats()
        assert (stats.depth, stats.dead, len(standin.events)) == (50, 0, 0)

        standin.api_key = YESPO_KEY  # fixed
        await standin.wait_for_events(50, within_s=15)
        await eventually(lambda: _depth_is(c, 0))
        assert not forwarder(c).paused
        assert (await spool(c).stats()).dead == 0


async def _paused(c: Running) -> bool:
    return forwarder(c).paused


async def test_a_wrong_key_is_probed_on_schedule_however_many_events_come(
    tmp_path: Path,
) -> None:
    async with pipeline(tmp_path) as (c, standin):
        forwarder(c).breaker.auth_probe_ms = (500, 500)
        standin.api_key = "rotated"
        await send(c, [page_view(0)])
        await eventually(lambda: _paused(c))
        started = time.monotonic()
        for n in range(1, 41):  # a shop keeps sending: each append wakes the forwarder
            await send(c, [page_view(n)])
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        refused = standin.stats()["requests"]["/api/v1/event"]["401"]
        # the first refusal, then one probe per 0.5 s (and one that may be on its way)
        assert refused <= 2 + elapsed / 0.5, (refused, elapsed)
        assert (await spool(c).stats()).depth == 41


async def test_outcomes_a_failed_spool_write_left_are_written_later_not_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pipeline(tmp_path) as (c, standin):
        f = forwarder(c)
        f.lease_ms = 1000  # a lost outcome would show as a second send within the test
        real_ack = f.spool.ack
        failures = []

        async def ack_failing_once(seqs: list[int]) -> None:
            if not failures:
                failures.append(list(seqs))
                raise SpoolError("database is locked")
            await real_ack(seqs)

        monkeypatch.setattr(f.spool, "ack", ack_failing_once)
        await send(c, [page_view(n) for n in range(20)])
        await eventually(lambda: _depth_is(c, 0))
        await asyncio.sleep(1.5)  # past the lease: nothing goes twice
        assert failures
        counts = key_values(standin)
        assert len(counts) == 20 and set(counts.values()) == {1}, counts


async def test_rejected_events_are_dead_lettered_and_replay_delivers_them(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as (c, standin):
        standin.faults = Faults(reject_if=RejectIf("email", "visitor3@example.com"))
        await send(c, [page_view(n) for n in range(6)])
        await standin.wait_for_events(5)
        await eventually(lambda: _dead_count_is(c, 1))
        [dead] = await spool(c).dead_letters(10)
        assert (dead.reason, dead.status, dead.record.message_id) == ("rejected", 400, "pv-3")
        assert "reject" in dead.detail
        assert len(standin.events) == 5

        standin.faults = Faults()
        assert await spool(c).replay() == 1
        forwarder(c).notify()
        await standin.wait_for_events(6)
        assert key_values(standin)["visitor3@example.com"] == 1
        assert (await spool(c).stats()).dead == 0


async def _dead_count_is(c: Running, n: int) -> bool:
    return (await spool(c).stats()).dead == n


BASIC = {"Authorization": "Basic " + base64.b64encode(b"u:test-key").decode()}


def add_order(n: int) -> dict[str, Any]:
    """An order in Yespo's Add-orders form."""
    return {
        "externalOrderId": f"A-{n}",
        "externalCustomerId": f"cust-{n}",
        "totalCost": 5,
        "status": "DELIVERED",
        "date": "2026-11-23T10:00:00",
        "email": f"o{n}@example.com",
    }


async def test_orders_from_add_orders_endpoint_go_to_add_orders_in_batches(
    tmp_path: Path,
) -> None:
    async with pipeline(tmp_path) as (c, standin):
        status, reply = await c.post(
            "/api/v1/orders", {"orders": [add_order(n) for n in range(30)]}, headers=BASIC
        )
        assert (status, reply["failedOrders"]) == (200, [])
        await standin.wait_for_orders(30)
        assert set(standin.latest_orders) == {f"A-{n}" for n in range(30)}
        requests = standin.stats()["requests"]["/api/v1/orders"]["200"]
        assert requests < 30  # batched, not one request per order


async def test_a_backlog_of_orders_goes_in_requests_of_up_to_1000(tmp_path: Path) -> None:
    # At the default rate ceiling (200 requests/s) a token burst is 20 leases; a request to
    # Add orders must still carry up to 1000 orders.
    async with pipeline(tmp_path, yespo_max_rps=200) as (c, standin):
        for start in (0, 1000):
            batch = [add_order(n) for n in range(start, start + 1000)]
            status, reply = await c.post("/api/v1/orders", {"orders": batch}, headers=BASIC)
            assert (status, reply["failedOrders"]) == (200, [])
        await standin.wait_for_orders(2000)
        await eventually(lambda: _depth_is(c, 0))
        requests = standin.stats()["requests"]["/api/v1/orders"]["200"]
        assert requests <= 6, requests  # 2 when each request is full


async def test_dry_run_without_key_logs_yespo_form_and_acknowledges(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="collector.forward")
    async with running(make_settings(tmp_path, forward=True, yespo_api_key=None)) as c:
        await send(c, [page_view(9)])
        await eventually(lambda: _depth_is(c, 0))
        async with c.http.get(c.url + "/readyz") as resp:
            assert (await resp.json())["forwarder"] == "dry-run"
    lines = [r.getMessage() for r in caplog.records if "dry-run" in r.getMessage()]
    assert any('"keyValue":"visitor9@example.com"' in line for line in lines)


def complete_order(kind: str, n: int) -> dict[str, Any]:
    event = order_event(kind, n)
    event["properties"] |= {"totalCost": 10, "status": "INITIALIZED", "date": "2026-11-23T10:00:00"}
    return event


@pytest.mark.parametrize("mode", ["orders", "both"])
async def test_order_events_can_also_or_instead_go_to_add_orders(tmp_path: Path, mode: str) -> None:
    async with pipeline(tmp_path, yespo_orders_api=mode) as (c, standin):
        # Complete orders can become Add-orders orders; a bare orderDelivered cannot.
        await send(c, [complete_order("orderCreated", n) for n in range(3)])
        await send(c, [order_event("orderDelivered", n) for n in range(3)])
        await standin.wait_for_orders(3)
        await eventually(lambda: _depth_is(c, 0))
        assert set(standin.latest_orders) == {"ord-0", "ord-1", "ord-2"}
        assert standin.latest_orders["ord-0"]["status"] == "INITIALIZED"
        kinds = Counter(orjson.loads(r.raw)["eventTypeKey"] for r in standin.events)
        expected = {"orderDelivered": 3} | ({"orderCreated": 3} if mode == "both" else {})
        assert kinds == expected


async def test_the_log_says_what_was_delivered_every_few_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "REPORT_EVERY_S", 0.2)
    caplog.set_level("INFO", logger="collector")
    async with pipeline(tmp_path) as (c, standin):
        await send(c, [page_view(n) for n in range(3)])
        await standin.wait_for_events(3)

        def reported() -> list[str]:
            return [r.getMessage() for r in caplog.records if "delivered" in r.getMessage()]

        await eventually(lambda: _true(bool(reported())))
        assert reported()[0].startswith("delivered 3 events to Yespo in the last 0.2s")
        await asyncio.sleep(0.5)
        assert len(reported()) == 1  # nothing more delivered: nothing more said


async def _true(value: bool) -> bool:
    return value


def shopper_event(kind: str, props: dict[str, Any]) -> dict[str, Any]:
    """An event of the customer of `order_event`'s order 1 (email c1@example.com)."""
    return {"type": kind, "contact": {"email": "c1@example.com"}, "properties": props}


def event_types(records: list[Recorded]) -> list[str]:
    return [orjson.loads(r.raw)["eventTypeKey"] for r in records]


@pytest.mark.parametrize("mode", ["event", "orders"])
async def test_an_order_arrives_after_its_contacts_earlier_events_however_late_they_are(
    tmp_path: Path, mode: str
) -> None:
    async with pipeline(tmp_path, yespo_orders_api=mode) as (c, standin):
        # Yespo fails the page view's first attempt and asks for the next in 1 s; the cart
        # waits behind it (one contact), and so must the order placed meanwhile.
        standin.faults = Faults(status=503, times=1, retry_after=1)
        cart = {"products": [{"productId": "mug", "quantity": 1, "price": 10}]}
        viewed = {"location": "https://shop.example/mug"}
        await send(c, [shopper_event("pageViewed", viewed), shopper_event("cartUpdated", cart)])

        async def view_failed() -> bool:
            return "503" in standin.stats()["requests"].get("/api/v1/event", {})

        await eventually(view_failed)
        await send(c, [complete_order("orderCreated", 1)])
        if mode == "event":
            arrived = await standin.wait_for_events(3)
            assert event_types(arrived) == ["pageViewed", "cartUpdated", "orderCreated"]
        else:  # the order goes to Add orders
            [order] = await standin.wait_for_orders(1)
            arrived = await standin.wait_for_events(2)
            assert event_types(arrived) == ["pageViewed", "cartUpdated"]
            assert order.at >= arrived[1].at  # the stand-in's clock, in ms
        await eventually(lambda: _depth_is(c, 0))


@pytest.mark.parametrize("max_rps", [0, 50])  # each half waits for a token under a ceiling
async def test_a_whole_add_orders_request_refused_is_bisected_to_its_bad_orders(
    tmp_path: Path, max_rps: float
) -> None:
    async with pipeline(tmp_path, yespo_max_rps=max_rps) as (c, standin):
        # One bad order makes Yespo refuse the whole request it is in.
        standin.faults = Faults(
            reject_if=RejectIf("totalCost", "13", "bad cost", whole_request=True)
        )
        orders = [add_order(n) | ({"totalCost": 13} if n in (7, 31) else {}) for n in range(50)]
        status, reply = await c.post("/api/v1/orders", {"orders": orders}, headers=BASIC)
        assert (status, reply["failedOrders"]) == (200, [])
        await standin.wait_for_orders(48)
        await eventually(lambda: _depth_is(c, 0))
        assert set(standin.latest_orders) == {f"A-{n}" for n in range(50)} - {"A-7", "A-31"}
        dead = sorted(await spool(c).dead_letters(10), key=lambda d: d.record.seq)
        assert [(d.reason, d.status, d.record.key) for d in dead] == [
            ("rejected", 400, "order:A-7"),
            ("rejected", 400, "order:A-31"),
        ]
        assert "bad cost (externalOrderId A-7)" in dead[0].detail
        assert "bad cost (externalOrderId A-31)" in dead[1].detail
        requests = standin.stats()["requests"]["/api/v1/orders"]
        # the whole, then two halves per halving for each bad order (5 halvings: 25 to 1)
        assert sum(requests.values()) <= 1 + 2 * 2 * 5, requests
