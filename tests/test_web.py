"""The browser endpoint over real HTTP: site keys, CORS, the visitor cookie, anonymous
visitors held until they identify, and the files it serves."""

from __future__ import annotations

import asyncio
import gzip
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from collector.sources.visitors import sweep_held
from collector.spool import Spool
from standin import StandIn

from .conftest import (
    YESPO_KEY,
    Process,
    Running,
    delivering,
    free_port,
    make_settings,
    running,
)

SHOP = "https://shop.example"
SITE = "site-1"
VISITOR = "visitor-0001"


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,)}, anonymous_max_events=5)
    async with running(settings) as c:
        yield c


def page(location: str, mid: str, ts: int = 1_732_000_000_000) -> dict[str, Any]:
    return {"type": "pageViewed", "messageId": mid, "timestamp": ts,
            "properties": {"location": location}}  # fmt: skip


def identify(email: str, mid: str = "id-1") -> dict[str, Any]:
    return {"type": "identify", "messageId": mid, "contact": {"email": email}}


async def send(
    c: Running,
    batch: list[Any],
    *,
    origin: str | None = SHOP,
    site: str = SITE,
    visitor: str | None = VISITOR,
    cookies: dict[str, str] | None = None,
    path: str = "/lib/y",
) -> tuple[int, Any, Any]:
    body: dict[str, Any] = {"siteKey": site, "batch": batch}
    if visitor is not None:
        body["anonymousId"] = visitor
    headers = {"Content-Type": "text/plain;charset=UTF-8"}  # what sendBeacon sends
    if origin is not None:
        headers["Origin"] = origin
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with c.http.post(c.url + path, data=orjson.dumps(body), headers=headers) as resp:
        return resp.status, await resp.json(), resp


def spool(c: Running) -> Spool:
    s: Spool = c.app.state.spool
    return s


async def queued(c: Running) -> list[dict[str, Any]]:
    return [orjson.loads(r.body) for r in await spool(c).pending(100)]


def params(body: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in body["params"]}


async def test_anonymous_events_wait_until_identify_then_go_in_order_with_the_contact(
    web: Running,
) -> None:
    status, reply, _ = await send(web, [page("https://shop.example/", "m1"),
                                        page("https://shop.example/sale", "m2")])  # fmt: skip
    assert status == 200
    assert reply["accepted"] == 2 and reply["held"] == 2 and reply["rejected"] == []
    assert await queued(web) == []  # Yespo would drop them: nobody to attach them to
    assert (await spool(web).stats()).held == 2

    status, reply, _ = await send(web, [identify(" Jane@Example.com ")])
    assert (status, reply["accepted"]) == (200, 1)
    bodies = await queued(web)
    assert [params(b)["page"] for b in bodies] == [
        '{"location":"https://shop.example/"}',
        '{"location":"https://shop.example/sale"}',
    ]
    assert {b["keyValue"] for b in bodies} == {"jane@example.com"}
    records = await spool(web).pending(100)
    assert [r.message_id for r in records] == ["m1", "m2"]
    assert {r.event_time for r in records} == {1_732_000_000_000}  # their own time, kept

    # Later events of the visitor carry the contact without the page repeating it.
    status, reply, _ = await send(web, [page("https://shop.example/cart", "m3")])
    assert (reply["accepted"], reply["held"]) == (1, 0)
    assert (await queued(web))[-1]["keyValue"] == "jane@example.com"
    assert (await spool(web).stats()).held == 0


async def test_events_before_and_after_identify_in_one_batch_keep_their_order(
    web: Running,
) -> None:
    batch = [page("https://shop.example/a", "m1"), identify("a@example.com"),
             page("https://shop.example/b", "m2")]  # fmt: skip
    status, reply, _ = await send(web, batch)
    assert (status, reply["accepted"], reply["held"]) == (200, 3, 1)
    assert [r.message_id for r in await spool(web).pending(10)] == ["m1", "m2"]


async def test_a_bad_event_is_named_and_the_good_ones_beside_it_are_kept(web: Running) -> None:
    bad = {"type": "productViewed", "messageId": "bad-1", "properties": {"price": "cheap"}}
    status, reply, _ = await send(web, [page("https://shop.example/", "m1"), bad])
    assert status == 200
    assert reply["accepted"] == 1
    [item] = reply["rejected"]
    assert (item["index"], item["messageId"]) == (1, "bad-1")
    fields = {e["field"] for e in item["errors"]}
    assert {"properties.productId", "properties.price"} <= fields

    status, reply, _ = await send(web, [identify("not-an-email")])
    assert status == 400
    assert reply["rejected"][0]["errors"][0]["field"] == "contact.email"


@pytest.mark.parametrize("odd", [1, "x", None, []])
async def test_an_element_that_is_not_an_object_is_named_and_harms_no_one(
    web: Running, odd: object
) -> None:
    # Once as an anonymous visitor, once identified: each path must name the element and
    # keep the good event beside it.
    for step, mid in (("anonymous", "m1"), ("identified", "m2")):
        status, reply, _ = await send(web, [page("https://shop.example/", mid), odd])
        assert status == 200, (step, reply)
        assert (reply["accepted"], [r["index"] for r in reply["rejected"]]) == (1, [1]), step
        assert reply["rejected"][0]["errors"][0]["field"] == ""
        if step == "anonymous":
            await send(web, [identify("a@example.com")])
    assert [r.message_id for r in await spool(web).pending(10)] == ["m1", "m2"]


async def test_an_event_naming_a_contact_identifies_the_visitor_and_keeps_the_order(
    web: Running,
) -> None:
    await send(web, [page("https://shop.example/a", "m1")])  # held: nobody known yet
    named = {**page("https://shop.example/b", "m2"), "contact": {"email": "a@example.com"}}
    status, reply, _ = await send(web, [named])
    assert (status, reply["accepted"], reply["held"]) == (200, 1, 0)
    await send(web, [page("https://shop.example/c", "m3")])  # the visitor is known now
    assert [r.message_id for r in await spool(web).pending(10)] == ["m1", "m2", "m3"]
    assert {body["keyValue"] for body in await queued(web)} == {"a@example.com"}


async def test_anonymous_events_keep_no_context_and_claim_only_the_pages_ids(
    web: Running,
) -> None:
    # A context deeper than orjson writes back (it reads up to 1024 levels, writes 254):
    # checked, then not kept. The body is written by hand for the same reason.
    deep = b'{"d":' * 300 + b"{}" + b"}" * 300
    first = orjson.dumps(page("https://shop.example/", "m1"))[:-1] + b',"context":' + deep + b"}"
    plain = orjson.dumps(
        {"type": "pageViewed", "properties": {"location": "https://shop.example/"}}
    )
    body = b'{"siteKey":"%s","anonymousId":"%s","batch":[%s,%s,%s]}' % (
        SITE.encode(),
        VISITOR.encode(),
        first,
        plain,
        plain,
    )
    headers = {"Content-Type": "text/plain", "Origin": SHOP}
    async with web.http.post(web.url + "/lib/y", data=body, headers=headers) as resp:
        assert (resp.status, (await resp.json())["held"]) == (200, 3)
    path = web.settings.spool_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        claimed = [row[0] for row in conn.execute("SELECT message_id FROM seen")]
        bodies = [orjson.loads(row[0]) for row in conn.execute("SELECT body FROM held")]
    assert claimed == ["m1"]  # ids made up here cannot come again: no claim for them
    assert all("context" not in body for body in bodies)


async def test_readyz_reports_held_anonymous_events(web: Running) -> None:
    # Operators saw "depth": 0 while events waited for their visitor to identify.
    await send(web, [page("https://shop.example/", "m1"), page("https://shop.example/b", "m2")])
    async with web.http.get(web.url + "/readyz") as resp:
        body = await resp.json()
    assert (resp.status, body["depth"], body["held"]) == (200, 0, 2)
    await send(web, [identify("jane@example.com")])
    async with web.http.get(web.url + "/readyz") as resp:
        body = await resp.json()
    assert (body["depth"], body["held"]) == (2, 0)  # released into the queue


async def test_an_orders_later_event_waits_behind_its_held_creation(web: Running) -> None:
    # orderUpdated names only externalCustomerId: valid for an order event, but not a
    # contact the visitor can be identified by. The visitor's orderCreated is held, so
    # the update must wait behind it, not reach Yespo first.
    created = {"type": "orderCreated", "messageId": "c1",
               "properties": {"externalOrderId": "o-1", "totalCost": 10,
                              "status": "INITIALIZED", "date": "2026-11-23T10:00:00"}}  # fmt: skip
    updated = {"type": "orderUpdated", "messageId": "u1", "contact": {"externalCustomerId": "k1"},
               "properties": {"externalOrderId": "o-1", "status": "IN_PROGRESS"}}  # fmt: skip
    assert (await send(web, [created]))[1]["held"] == 1
    assert (await send(web, [updated]))[1]["held"] == 1
    assert await spool(web).pending(10) == []
    await send(web, [identify("a@example.com")])
    records = await spool(web).pending(10)
    assert [r.message_id for r in records] == ["c1", "u1"]
    bodies = [orjson.loads(r.body) for r in records]
    assert [params(b).get("externalCustomerId") for b in bodies] == [None, "k1"]


async def test_a_resent_batch_is_acknowledged_and_not_held_twice(web: Running) -> None:
    batch = [page("https://shop.example/", "m1")]
    await send(web, batch)
    status, reply, _ = await send(web, batch)
    assert (status, reply["accepted"], reply["duplicates"], reply["held"]) == (200, 1, 1, 0)
    await send(web, [identify("a@example.com")])
    assert len(await queued(web)) == 1


async def test_site_keys_are_tied_to_their_origins(web: Running) -> None:
    status, reply, resp = await send(web, [page("https://evil.example/", "m1")],
                                     origin="https://evil.example")  # fmt: skip
    assert status == 403 and "not allowed on https://evil.example" in reply["error"]
    assert "Access-Control-Allow-Origin" not in resp.headers

    status, reply, _ = await send(web, [page("https://shop.example/", "m1")], site="nope")
    assert status == 403 and "unknown site key" in reply["error"]

    status, reply, _ = await send(web, [page("https://shop.example/", "m1")], origin=None)
    assert status == 403

    status, _, resp = await send(web, [page("https://shop.example/", "m1")])
    assert status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert (await spool(web).stats()).held == 1  # only the allowed request stored anything


async def test_a_refusal_reaches_a_known_sites_page_and_no_one_elses(web: Running) -> None:
    # Without CORS headers the browser hides the answer and the script resends forever.
    status, _, resp = await send(web, [page("https://shop.example/", "m1")], site="mistyped")
    assert status == 403
    assert resp.headers.get("Access-Control-Allow-Origin") == SHOP
    status, _, resp = await send(web, [], site=SITE)  # an empty batch: 400
    assert status == 400
    assert resp.headers.get("Access-Control-Allow-Origin") == SHOP
    status, _, resp = await send(
        web, [page("https://x.example/", "m2")], origin="https://x.example"
    )
    assert status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers


# Headers no browser sends: urlsplit raised on them (a 500 and a traceback in the log).
NOT_AN_ORIGIN = [
    {"Origin": "http://[::1"},
    {"Referer": "http://[::1/cart"},
    {"Origin": "null", "Referer": "https://[shop/"},
]


@pytest.mark.parametrize("headers", NOT_AN_ORIGIN)
async def test_an_origin_that_is_not_a_url_is_refused_with_a_reason(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    # "self" makes the collector read the origin's host, so each value is parsed.
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,), "own": ("self",)})
    async with running(settings) as c:
        body = orjson.dumps({"siteKey": "own", "batch": [page(SHOP, "m1")]})
        for method in ("POST", "OPTIONS"):
            async with c.http.request(
                method,
                c.url + "/lib/y",
                data=body,
                headers={"Content-Type": "text/plain", **headers},
            ) as resp:
                assert resp.status == 403, method
                reason = (await resp.json())["error"]
                assert "Origin" in reason or "Referer" in reason, reason
                assert "Access-Control-Allow-Origin" not in resp.headers
        assert (await spool(c).stats()).held == 0


async def test_hostile_origins_leave_no_traceback_and_no_site_key_in_the_log(
    tmp_path: Path, processes: list[Process]
) -> None:
    env = {
        "COLLECTOR_SPOOL_URL": f"sqlite:///{tmp_path}/spool.db",
        "COLLECTOR_API_KEYS": "k",
        "COLLECTOR_FORWARD": "false",
        "COLLECTOR_SITE_KEYS": "own-site-key=self",
    }
    log = tmp_path / "collector.log"
    proc = Process(free_port(), env, log)
    processes.append(proc)
    await proc.wait_ready()
    async with aiohttp.ClientSession() as http:
        for key in ("own-site-key", "unknown-site-key"):
            body = orjson.dumps({"siteKey": key, "batch": [page(SHOP, "m1")]})
            for headers in NOT_AN_ORIGIN:
                for method in ("POST", "OPTIONS"):
                    async with http.request(method, proc.url + "/lib/y", data=body,
                                            headers=headers) as resp:  # fmt: skip
                        assert resp.status == 403
    proc.stop()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "site-key" not in text, text


async def test_cors_preflight_is_answered_for_allowed_origins_only(web: Running) -> None:
    headers = {"Origin": SHOP, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    async with web.http.options(web.url + "/lib/y", headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    headers["Origin"] = "https://evil.example"
    async with web.http.options(web.url + "/lib/y", headers=headers) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert (await resp.json())["error"] == "no site key is allowed on https://evil.example"


async def test_the_visitor_id_lives_in_a_first_party_cookie(web: Running) -> None:
    # No id in the body and no cookie: the collector makes one and sets the cookie.
    status, reply, resp = await send(web, [page("https://shop.example/", "m1")], visitor=None)
    assert status == 200
    minted = reply["anonymousId"]
    cookie = resp.cookies["yc_aid"]
    assert cookie.value == minted
    assert cookie["samesite"].lower() == "lax" and cookie["secure"]
    assert int(cookie["max-age"]) >= 300 * 24 * 3600
    # The cookie alone names the visitor on the next request.
    status, reply, _ = await send(web, [identify("c@example.com")], visitor=None,
                                  cookies={"yc_aid": minted})  # fmt: skip
    assert reply["anonymousId"] == minted
    assert [r.message_id for r in await spool(web).pending(10)] == ["m1"]


async def test_a_visitor_keeps_a_bounded_number_of_events_and_the_rest_are_counted(
    web: Running,
) -> None:
    await send(web, [page(f"https://shop.example/{i}", f"m{i}") for i in range(7)])
    assert (await spool(web).stats()).held == 5  # anonymous_max_events
    await send(web, [identify("d@example.com")])
    assert [r.message_id for r in await spool(web).pending(10)] == [f"m{i}" for i in range(2, 7)]
    assert 'anonymous_expired_events_total{reason="count"} 2.0' in await metrics(web)


async def test_held_events_past_their_age_expire_and_are_counted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,)}, anonymous_max_age_s=1)
    async with running(settings) as c:
        await send(c, [page("https://shop.example/", "m1")])
        assert "anonymous_held_events 1.0" in await metrics(c)
        await asyncio.sleep(1.1)
        # The sweep runs every minute on its own; run one now.
        assert await sweep_held(settings, spool(c), c.app.state.metrics) == 1
        text = await metrics(c)
        assert 'anonymous_expired_events_total{reason="age"} 1.0' in text
        assert "anonymous_held_events 0.0" in text
        await send(c, [identify("e@example.com")])
        assert await queued(c) == []


async def metrics(c: Running) -> str:
    async with c.http.get(c.url + "/metrics") as resp:
        return await resp.text()


async def test_the_script_is_served_compressed_and_cacheable(tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "y.js").write_text("/* tracking */ window.yc = window.yc || function () {};\n" * 20)
    settings = make_settings(tmp_path, static_dir=str(static), web_path="/assets/app")
    async with running(settings) as c:
        async with c.http.get(c.url + "/assets/app.js", auto_decompress=False,
                              headers={"Accept-Encoding": "gzip"}) as resp:  # fmt: skip
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert resp.headers["Content-Type"].startswith("text/javascript")
            assert gzip.decompress(await resp.read()) == (static / "y.js").read_bytes()
            etag = resp.headers["ETag"]
        async with c.http.get(c.url + "/assets/app.js", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304


async def test_the_demo_shop_is_served_with_the_configured_paths(tmp_path: Path) -> None:
    demo = tmp_path / "static" / "demo"
    demo.mkdir(parents=True)
    (demo / "index.html").write_text('<script src="__YC_SCRIPT__"></script>__YC_ENDPOINT__')
    settings = make_settings(tmp_path, static_dir=str(tmp_path / "static"), demo=True,
                             web_path="/s/t")  # fmt: skip
    async with running(settings) as c:
        async with c.http.get(c.url + "/demo") as resp:
            assert resp.status == 200 and str(resp.url).endswith("/demo/")
            assert await resp.text() == '<script src="/s/t.js"></script>/s/t'
        async with c.http.get(c.url + "/demo/missing.html") as resp:
            assert resp.status == 404
        # The demo's site key works from the collector's own origin, and only there.
        status, _, _ = await send(
            c, [page(c.url + "/demo/", "m1")], site="demo", origin=c.url, path="/s/t"
        )
        assert status == 200
        status, _, _ = await send(c, [page(SHOP, "m2")], site="demo", origin=SHOP, path="/s/t")
        assert status == 403


async def test_the_banner_announces_only_the_browser_files_that_are_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "static"
    empty.mkdir()
    settings = make_settings(tmp_path, static_dir=str(empty), demo=True)
    caplog.set_level(logging.INFO, logger="collector")
    async with running(settings) as c, c.http.get(c.url + "/lib/y.js") as resp:
        assert resp.status == 404
    (banner,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("browsers:")]
    assert "script at" not in banner and "demo" not in banner
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("no tracking script: " + str(empty / "y.js")) for w in warnings)
    assert any(w.startswith("no demo shop: ") and str(empty / "demo") in w for w in warnings)


async def test_held_events_reach_yespo_after_identify_with_the_contact_in_order(
    tmp_path: Path,
) -> None:
    async with StandIn(api_key=YESPO_KEY) as yespo:
        settings = delivering(tmp_path, yespo.url, site_keys={SITE: (SHOP,)})
        async with running(settings) as c:
            await send(c, [page(f"https://shop.example/{i}", f"m{i}") for i in range(3)])
            await asyncio.sleep(0.3)
            assert yespo.events == []  # nothing Yespo could attach to anyone
            await send(c, [identify("f@example.com"), page("https://shop.example/3", "m3")])
            arrived = await yespo.wait_for_events(4)
    bodies = [orjson.loads(r.raw) for r in arrived]
    assert [params(b)["page"] for b in bodies] == [
        f'{{"location":"https://shop.example/{i}"}}' for i in range(4)
    ]
    assert all(params(b)["email"] == "f@example.com" for b in bodies)


async def test_identifying_again_as_the_same_contact_writes_nothing(
    web: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send(web, [page("https://shop.example/", "m1"), identify("g@example.com")])
    writes = []
    real = spool(web).identify

    async def counted(*args: Any, **kwargs: Any) -> None:
        writes.append(args[0])
        await real(*args, **kwargs)

    monkeypatch.setattr(spool(web), "identify", counted)
    # Every page of a logged-in visitor identifies: no transaction (and fsync) for it...
    for n in range(3):
        status, reply, _ = await send(web, [identify("g@example.com", f"id-{n}")])
        assert (status, reply["accepted"]) == (200, 1)
    assert writes == []
    # ...but a different contact is remembered, and later events go with it.
    await send(web, [identify("h@example.com", "id-h"), page("https://shop.example/2", "m2")])
    assert writes == ["visitor:" + VISITOR]
    assert [b["keyValue"] for b in await queued(web)] == ["g@example.com", "h@example.com"]


async def test_browsers_fill_only_their_share_of_the_spool_and_identify_keeps_to_it(
    tmp_path: Path,
) -> None:
    # A site key is public: whoever sends under it must not shut the shop's own server
    # events out (the bound is 10, browsers get 8), nor pass the bound through identify.
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,)}, spool_max_events=10)
    async with running(settings) as c:
        named = [
            {**page(f"https://shop.example/{n}", f"n{n}"), "contact": {"email": "a@example.com"}}
            for n in range(8)
        ]
        assert (await send(c, named, visitor="visitor-named"))[0] == 200
        status, _, resp = await send(
            c, [page("https://shop.example/x", "n9")], visitor="visitor-named"
        )
        assert status == 503 and resp.headers["Retry-After"]
        # held events of a new visitor wait; identifying would pass the browsers' share
        assert (await send(c, [page("https://shop.example/h", "h1")], visitor="visitor-anon"))[1][
            "held"
        ] == 1
        status, _, _ = await send(c, [identify("b@example.com")], visitor="visitor-anon")
        assert status == 503
        assert [r.message_id for r in await spool(c).held("visitor:visitor-anon")] == ["h1"]
        # the server endpoint still has its room
        status, reply = await c.post(
            "/v1/events",
            {"type": "pageViewed", "contact": {"email": "s@example.com"},
             "properties": {"location": "https://shop.example/s"}},
        )  # fmt: skip
        assert (status, reply["accepted"]) == (200, 1)


async def test_a_full_spool_is_told_to_the_page_with_cors_and_retry_after(tmp_path: Path) -> None:
    # Without CORS headers the script cannot read the 503 and takes it for a network error:
    # it would resend at once instead of after Retry-After.
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,)}, spool_max_events=10)
    async with running(settings) as c:
        named = [
            {**page(f"https://shop.example/{n}", f"n{n}"), "contact": {"email": "a@example.com"}}
            for n in range(8)
        ]
        assert (await send(c, named))[0] == 200
        status, reply, resp = await send(c, [page("https://shop.example/x", "n9")])
        assert status == 503 and "try again later" in reply["error"]
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
        assert int(resp.headers["Retry-After"]) >= 1
        # a page no site key allows still learns nothing
        status, _, resp = await send(
            c, [page("https://evil.example/x", "n10")], origin="https://evil.example"
        )
        assert status == 403 and "Access-Control-Allow-Origin" not in resp.headers


async def test_a_request_that_cannot_be_taken_whole_is_refused_before_any_of_it_is_held(
    tmp_path: Path,
) -> None:
    # The browsers' share (8 of 10) is taken; a batch with an anonymous event and then one
    # naming a contact (which identifies the visitor, releasing what is held) cannot fit:
    # its 503 must mean that nothing of it was stored.
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,)}, spool_max_events=10)
    async with running(settings) as c:
        batch = [{"type": "pageViewed", "contact": {"email": f"s{n}@example.com"},
                  "properties": {"location": f"https://shop.example/{n}"}} for n in range(8)]  # fmt: skip
        assert (await c.post("/v1/events", {"batch": batch}))[0] == 200
        named = {**page("https://shop.example/b", "m2"), "contact": {"email": "a@example.com"}}
        status, _, _ = await send(c, [page("https://shop.example/a", "m1"), named])
        assert status == 503
        assert await spool(c).held(f"visitor:{VISITOR}") == []


async def test_a_batch_that_identifies_is_refused_whole_or_taken_whole(tmp_path: Path) -> None:
    # Room for one more browser event (share 8 of 10, 7 taken): [page, identify, page]
    # would queue three. Nothing of it may be stored by its 503; anonymous events alone
    # are still held, since holding them takes no room in the queue.
    settings = make_settings(tmp_path, site_keys={SITE: (SHOP,)}, spool_max_events=10)
    async with running(settings) as c:
        batch = [{"type": "pageViewed", "contact": {"email": f"s{n}@example.com"},
                  "properties": {"location": f"https://shop.example/{n}"}} for n in range(7)]  # fmt: skip
        assert (await c.post("/v1/events", {"batch": batch}))[0] == 200
        a, b = page("https://shop.example/a", "a1"), page("https://shop.example/b", "b1")
        status, _, _ = await send(c, [a, identify("a@example.com"), b])
        assert status == 503
        assert (await spool(c).stats()).depth == 7
        assert await spool(c).held(f"visitor:{VISITOR}") == []
        assert await spool(c).contact_of(f"visitor:{VISITOR}", 0) is None
        status, reply, _ = await send(c, [a, b])
        assert (status, reply["held"]) == (200, 2)


async def test_a_visitors_order_naming_its_own_customer_waits_for_the_visitors_events(
    web: Running,
) -> None:
    # The order names only its externalCustomerId; the visitor's events go by the email it
    # identified as. Both orders must still wait for them: held and released together, or
    # sent after the visitor is known.
    props = {"externalOrderId": "o-1", "totalCost": 10, "status": "INITIALIZED",
             "date": "2026-11-23T10:00:00"}  # fmt: skip
    own = {"externalCustomerId": "k1"}
    held_order = {"type": "orderCreated", "messageId": "o1", "contact": own, "properties": props}
    later = {**held_order, "messageId": "o2", "properties": {**props, "externalOrderId": "o-2"}}
    await send(web, [page("https://shop.example/cart", "m1"), held_order])
    await send(web, [identify("a@example.com"), later])
    records = {r.message_id: r for r in await spool(web).pending(10)}
    assert records["m1"].key == "contact:a@example.com"
    assert (records["o1"].key, records["o1"].after) == ("order:o-1", "contact:a@example.com")
    assert (records["o2"].key, records["o2"].after) == ("order:o-2", "contact:a@example.com")
    assert params(orjson.loads(records["o2"].body))["externalCustomerId"] == "k1"  # kept
