"""The browser endpoint's request ceiling per client, over real HTTP: 429 with Retry-After
and a reason the page can read, per client address (behind trusted proxies only as they
say), and a bounded number of buckets whatever the number of addresses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.web import ratelimit

from .conftest import Running, make_settings, running
from .test_web import SHOP, SITE, page, send, spool

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


def ceiling(tmp_path: Path, **overrides: Any) -> Any:
    return make_settings(tmp_path, site_keys={SITE: (SHOP,)}, **overrides)


async def post(c: Running, n: int, headers: dict[str, str]) -> tuple[int, Any, Any]:
    body = orjson.dumps({"siteKey": SITE, "batch": [page(SHOP + "/", f"m{n}")]})
    all_headers = {"Content-Type": "text/plain", "Origin": SHOP, **headers}
    async with c.http.post(c.url + "/lib/y", data=body, headers=all_headers) as resp:
        return resp.status, await resp.json(), resp


async def preflight(c: Running, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    all_headers = {"Origin": SHOP, **PREFLIGHT, **headers}
    async with c.http.options(c.url + "/lib/y", headers=all_headers) as resp:
        return resp.status, resp, await resp.read()


async def test_a_client_past_its_burst_gets_429_with_retry_after_that_its_page_can_read(
    tmp_path: Path,
) -> None:
    async with running(ceiling(tmp_path, web_rate=0.5, web_burst=3)) as c:
        for n in range(3):
            assert (await send(c, [page(SHOP + "/", f"m{n}")]))[0] == 200
        status, reply, resp = await send(c, [page(SHOP + "/", "m3")])
        assert status == 429
        assert reply["error"].startswith("too many requests from 127.0.0.1: at most 0.5 a second")
        assert resp.headers["Retry-After"] == "2"
        # the script reads it (and retries later) only with CORS headers for its page
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
        assert (await spool(c).stats()).held == 3  # nothing of the refused request
        # a page no site key allows gets the 429, but nothing it could read
        status, _, resp = await send(c, [page(SHOP, "m4")], origin="https://x.example")
        assert status == 429 and "Access-Control-Allow-Origin" not in resp.headers
        # a preflight is a request too
        status, resp, body = await preflight(c, {})
        assert status == 429 and resp.headers["Access-Control-Allow-Origin"] == SHOP
        assert "too many requests" in orjson.loads(body)["error"]
        async with c.http.get(c.url + "/metrics") as metrics:
            text = await metrics.text()
        assert 'refused_requests_total{endpoint="web",status="429"} 3.0' in text


async def test_the_bucket_refills_at_the_rate(tmp_path: Path) -> None:
    async with running(ceiling(tmp_path, web_rate=20, web_burst=1)) as c:
        assert (await send(c, [page(SHOP + "/", "m1")]))[0] == 200
        status, _, resp = await send(c, [page(SHOP + "/", "m2")])
        assert (status, resp.headers["Retry-After"]) == (429, "1")  # whole seconds, at least 1
        await asyncio.sleep(0.1)  # two tokens' time at 20 a second; the bucket holds one
        assert (await send(c, [page(SHOP + "/", "m2")]))[0] == 200


async def test_each_client_behind_a_trusted_proxy_has_its_own_ceiling(tmp_path: Path) -> None:
    settings = ceiling(tmp_path, web_rate=0.1, web_burst=2, trusted_proxies=("127.0.0.0/8",))
    async with running(settings) as c:
        a = {"X-Forwarded-For": "203.0.113.1"}
        assert [(await post(c, n, a))[0] for n in range(3)] == [200, 200, 429]
        assert (await post(c, 3, {"X-Forwarded-For": "203.0.113.2"}))[0] == 200
        # what the client writes left of its own address changes nothing
        status, reply, _ = await post(c, 4, {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"})
        assert status == 429 and "from 203.0.113.1" in reply["error"]
        # an IPv6 host is one client for its whole /64
        v6 = [{"X-Forwarded-For": f"2001:db8::{n}"} for n in range(1, 4)]
        assert [(await post(c, 10 + n, h))[0] for n, h in enumerate(v6)] == [200, 200, 429]


async def test_forwarded_for_from_an_untrusted_peer_is_not_believed(tmp_path: Path) -> None:
    for trusted in ((), ("10.0.0.0/8",)):  # the peer, 127.0.0.1, is not trusted either way
        settings = ceiling(tmp_path, web_rate=0.1, web_burst=2, trusted_proxies=trusted)
        async with running(settings) as c:
            spoofed = [{"X-Forwarded-For": f"203.0.113.{n}"} for n in range(3)]
            assert [(await post(c, n, h))[0] for n, h in enumerate(spoofed)] == [200, 200, 429]


async def test_the_buckets_stay_bounded_whatever_the_number_of_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 50)
    settings = ceiling(tmp_path, web_rate=0.1, web_burst=2, trusted_proxies=("127.0.0.1",))
    async with running(settings) as c:
        limiter = c.app.state.browser.limiter
        busy = {"X-Forwarded-For": "192.0.2.1"}  # a client that keeps sending
        assert [(await preflight(c, busy))[0] for _ in range(2)] == [204, 204]
        for n in range(300):  # a flood from 300 addresses
            ip = f"198.51.{n // 250}.{n % 250}"
            assert (await preflight(c, {"X-Forwarded-For": ip}))[0] == 204
            if n % 20 == 0:
                assert (await preflight(c, busy))[0] == 429
        assert len(limiter) == 50
        # the buckets dropped were the idle ones: the busy client is still held back,
        # and the latest one of the flood has one token left
        assert (await preflight(c, busy))[0] == 429
        last = {"X-Forwarded-For": "198.51.1.49"}
        assert [(await preflight(c, last))[0] for _ in range(2)] == [204, 429]
        assert len(limiter) == 50


async def test_a_rate_of_zero_lifts_the_ceiling(tmp_path: Path) -> None:
    async with running(ceiling(tmp_path, web_rate=0, web_burst=1)) as c:
        assert c.app.state.browser.limiter is None
        statuses = {(await preflight(c, {}))[0] for _ in range(20)}
        assert statuses == {204}
