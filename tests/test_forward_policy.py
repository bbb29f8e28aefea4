"""The forwarder's pure parts: reading Retry-After and Add orders' failedOrders, and the
retry delay."""

from __future__ import annotations

import asyncio
import email.utils
import time

import orjson
import pytest
from aiohttp import web

from collector.delivery import Forwarder, RetryPolicy
from collector.delivery.yespo import Reply, YespoClient, failed_order_ids, retry_after_seconds
from collector.spool.memory import MemorySpool

from .spool.conftest import Entry

NOW = 1_790_000_000.0  # epoch seconds


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (email.utils.formatdate(NOW + 120, usegmt=True), 120.0),  # the HTTP-date form
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),  # a date gone by: now
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_is_read_in_both_forms(header: str, seconds: float) -> None:
    assert retry_after_seconds(header, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "header",
    [None, "", "-1", "soon", "inf", "nan", "1e400", "Wed, 99",
     "Wed, 21 Oct 99999999999999999999 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 +99999999999"],
)  # fmt: skip
def test_unusable_retry_after_is_read_as_absent(header: str | None) -> None:
    assert retry_after_seconds(header, now=NOW) is None


def test_retry_after_floors_the_delay_but_never_past_an_entrys_life() -> None:
    policy = RetryPolicy(base_ms=1000, max_delay_ms=300_000, max_age_ms=3_600_000)
    assert policy.delay_ms(1, None, 0.0) == 500  # equal jitter: half the ceiling at least
    assert policy.delay_ms(1, 120.0, 0.0) == 120_000
    # a huge Retry-After (a proxy's 1e17) must still make a delay SQLite can store
    assert policy.delay_ms(1, 1e17, 0.0) == 3_600_000


@pytest.mark.parametrize(
    ("body", "failed"),
    [
        ('{"failedOrders":[]}', {}),
        ("", {}),
        ('{"failedOrders":[{"externalOrderId":"5","message":"bad date"}]}', {"5": "bad date"}),
        # Yespo's own plugin types failedOrders as `object | object[]`
        ('{"failedOrders":{"externalOrderId":"5","message":"bad date"}}', {"5": "bad date"}),
        ('{"failedOrders":{"5":"bad date","6":{"code":1}}}', {"5": "bad date", "6": '{"code":1}'}),
        ('{"failedOrders":[{"externalOrderId":7,"error":"no items"}]}', {"7": "no items"}),
    ],
)
def test_the_orders_add_orders_refused_are_read_in_every_form(
    body: str, failed: dict[str, str]
) -> None:
    assert failed_order_ids(body) == failed


@pytest.mark.parametrize("body", ["not json", '{"failedOrders":"some"}', '{"failedOrders":3}'])
def test_an_unreadable_add_orders_reply_says_so(body: str) -> None:
    assert failed_order_ids(body) is None


async def test_a_sink_that_fails_gets_its_entry_a_retry_not_a_lost_outcome() -> None:
    # A bug in sending (here: the sink raises) must leave every entry with an outcome;
    # otherwise it waits leased until its lease ends, and a 2xx already given goes twice.
    class FailingOnce:
        calls = 0

        async def start(self) -> None: ...
        async def close(self) -> None: ...

        async def send_event(self, body: bytes) -> Reply:
            self.calls += 1
            if self.calls == 1:
                raise OverflowError("a bug")
            return Reply(200, "")

        async def send_orders(self, orders: list[bytes]) -> Reply:
            return Reply(200, "")

    spool = MemorySpool(max_events=10, dedup_window_ms=1000)
    await spool.open()
    await spool.append([Entry("m1")], int(time.time() * 1000))
    sink = FailingOnce()
    f = Forwarder(spool, sink, retry=RetryPolicy(base_ms=1), lease_ms=600_000, poll_ms=10)
    task = asyncio.create_task(f.run())
    try:
        for _ in range(200):
            if (await spool.stats()).depth == 0:
                break
            await asyncio.sleep(0.01)
        assert (await spool.stats()).depth == 0 and sink.calls == 2
    finally:
        f.stop(1)
        await task


async def test_an_add_orders_reply_listing_many_failed_orders_is_read_whole() -> None:
    # Cut at 2,000 characters, this reply would not parse, and every order of the request
    # would count as delivered.
    failed = [{"externalOrderId": f"o-{n}", "message": "x" * 50} for n in range(100)]
    body = orjson.dumps({"failedOrders": failed})

    async def orders(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v1/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = YespoClient(f"http://127.0.0.1:{port}/api", "key")
    await client.start()
    try:
        reply = await client.send_orders([b"{}"])
        assert len(failed_order_ids(reply.body) or {}) == 100
    finally:
        await client.close()
        await runner.cleanup()
