"""Segment's HTTP Tracking API over real HTTP: auth, bodies and limits, Segment's answers,
people held until they identify, carts, and what becomes of calls that cannot be events.
(The SDKs themselves are driven in test_segment_sdks.py.)"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.sources.segment import PATHS
from collector.spool import Spool

from .conftest import Running, make_settings, running
from .test_overload import half_sent

WRITE_KEY = "wk-test"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
T = 1_732_000_000_000  # the senders' clock in these tests (epoch ms)


@pytest.fixture
async def seg(tmp_path: Path) -> AsyncIterator[Running]:
    async with running(make_settings(tmp_path, segment_write_keys=(WRITE_KEY,))) as c:
        yield c


async def post(
    c: Running, path: str, body: Any, headers: dict[str, str] | None = None, raw: bool = False
) -> tuple[int, Any, dict[str, str]]:
    data = body if raw else orjson.dumps(body)
    heads = {"Content-Type": "application/json", **(BASIC if headers is None else headers)}
    async with c.http.post(c.url + path, data=data, headers=heads) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def batch(c: Running, *calls: dict[str, Any], **extra: Any) -> None:
    status, reply, _ = await post(c, "/v1/batch", {"batch": list(calls), **extra})
    assert (status, reply) == (200, {"success": True})


def spool(c: Running) -> Spool:
    s: Spool = c.app.state.spool
    return s


async def queued(c: Running) -> list[dict[str, Any]]:
    """The Yespo bodies waiting, in order, each with its params as a dict."""
    out = []
    for record in await spool(c).pending(1000):
        body = orjson.loads(record.body)
        out.append(
            {"type": body["eventTypeKey"], **{p["name"]: p["value"] for p in body["params"]}}
        )
    return out


def track(mid: str, event: str, user: str | None = None, anon: str | None = None,
          **properties: Any) -> dict[str, Any]:  # fmt: skip
    call: dict[str, Any] = {"type": "track", "messageId": mid, "event": event,
                            "properties": properties, "timestamp": T}  # fmt: skip
    if user is not None:
        call["userId"] = user
    if anon is not None:
        call["anonymousId"] = anon
    return call


def page(mid: str, url: str, user: str | None = None, anon: str | None = None) -> dict[str, Any]:
    call = track(mid, "", user, anon, url=url)
    del call["event"]
    return {**call, "type": "page"}


def identify(mid: str, user: str | None = None, anon: str | None = None,
             **traits: Any) -> dict[str, Any]:  # fmt: skip
    call: dict[str, Any] = {"type": "identify", "messageId": mid, "traits": traits}
    if user is not None:
        call["userId"] = user
    if anon is not None:
        call["anonymousId"] = anon
    return call


async def metric(c: Running, name: str) -> float:
    async with c.http.get(c.url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


# -- auth ------------------------------------------------------------------------------------


async def test_the_write_key_is_basic_auths_user_name_or_writekey_in_the_body(
    seg: Running,
) -> None:
    call = page("p1", "https://s.example/", user="u1")
    assert (await post(seg, "/v1/page", call))[:2] == (200, {"success": True})
    body = {"batch": [page("p2", "https://s.example/", user="u1")], "writeKey": WRITE_KEY}
    assert (await post(seg, "/v1/batch", body, headers={}))[:2] == (200, {"success": True})


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}, {}, "unknown write key"),
        ({}, {"writeKey": "nope"}, "unknown write key"),
        ({}, {}, "send the write key as Basic auth's user name, or as writeKey"),
        ({"Authorization": "Bearer " + WRITE_KEY}, {}, "send the write key as Basic"),
    ],
)  # fmt: skip
async def test_an_unknown_or_missing_write_key_is_401(
    seg: Running, headers: dict[str, str], body: dict[str, Any], message: str
) -> None:
    status, reply, heads = await post(seg, "/v1/batch", {"batch": [], **body}, headers=headers)
    assert status == 401 and reply["message"].startswith(message)
    assert heads["WWW-Authenticate"] == 'Basic realm="collector"'


async def test_without_write_keys_configured_segment_calls_are_refused_saying_so(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path)) as c:
        status, reply, _ = await post(c, "/v1/batch", {"batch": []})
    assert status == 401 and "COLLECTOR_SEGMENT_WRITE_KEYS" in reply["message"]


async def test_a_collector_api_key_is_not_a_write_key(seg: Running) -> None:
    basic = base64.b64encode(f"{seg.settings.api_keys[0]}:".encode()).decode()
    status, _, _ = await post(seg, "/v1/batch", {"batch": []}, {"Authorization": f"Basic {basic}"})
    assert status == 401


# -- bodies and limits ------------------------------------------------------------------------


async def test_a_gzip_body_is_taken(seg: Running) -> None:
    body = gzip.compress(orjson.dumps({"batch": [page("p1", "https://s.example/", user="u1")]}))
    status, reply, _ = await post(
        seg, "/v1/batch", body, {**BASIC, "Content-Encoding": "gzip"}, raw=True
    )
    assert (status, reply) == (200, {"success": True})
    assert len(await spool(seg).held("segment:u:u1")) == 1


async def test_a_gzip_body_that_inflates_past_500_kb_is_400_not_inflated_whole(
    seg: Running,
) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")  # 50 MB of spaces
    assert len(bomb) < 100_000
    status, reply, _ = await post(
        seg, "/v1/batch", bomb, {**BASIC, "Content-Encoding": "gzip"}, raw=True
    )
    assert status == 400 and "over 512000 bytes" in reply["message"]


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"Content-Encoding": "gzip"}, b'{"batch": []}', "body is not valid gzip"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b'{"batch": []}')[:-9], "gzip body is cut"),
        ({"Content-Encoding": "br"}, b'{"batch": []}', "Content-Encoding 'br' is not taken"),
        ({}, b"not json", "body is not valid JSON"),
        ({}, b"[1, 2]", "body must be a JSON object"),
        ({}, b'{"batch": {}}', 'a batch body is {"batch": [calls]'),
        ({}, b'{"batch": [' + b" " * 600_000 + b"]}", "body of 600013 bytes is over the limit"),
    ],
)  # fmt: skip
async def test_a_body_that_is_not_a_batch_or_over_the_limit_is_400_with_why(
    seg: Running, headers: dict[str, str], body: bytes, message: str
) -> None:
    status, reply, _ = await post(seg, "/v1/batch", body, {**BASIC, **headers}, raw=True)
    assert status == 400 and reply["message"].startswith(message), reply


async def test_a_call_over_32_kb_is_400_alone_and_rejected_in_a_batch(seg: Running) -> None:
    big = track("big", "Signed Up", user="u1", note="x" * 33_000)
    status, reply, _ = await post(seg, "/v1/track", big)
    assert status == 400 and "over Segment's 32 KB per call" in reply["message"]
    await batch(seg, big, track("small", "Signed Up", user="u1"))
    [kept] = await spool(seg).rejected(10)
    assert (kept.reason, kept.message_id) == ("too_large", "big")
    assert [h.message_id for h in await spool(seg).held("segment:u:u1")] == ["small"]


async def test_a_call_nested_too_deeply_for_json_writers_is_rejected_not_an_error(
    seg: Running,
) -> None:
    deep: Any = 1
    for _ in range(300):  # orjson reads 1024 levels, but writes 254
        deep = [deep]
    calls = [track("deep", "Signed Up", user="u1", deep=deep),
             track("wide", "Signed Up", user="u1", note="x" * 40_000)]  # fmt: skip
    body = json.dumps({"batch": calls}).encode()  # orjson writes no more than 254 levels
    status, reply, _ = await post(seg, "/v1/batch", body, raw=True)
    assert (status, reply) == (200, {"success": True})
    assert [(r.message_id, r.reason) for r in await spool(seg).rejected(10)] == [
        ("deep", "invalid"),
        ("wide", "too_large"),
    ]


async def test_a_full_spool_is_503_with_retry_after_and_stores_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, segment_write_keys=(WRITE_KEY,), spool_max_events=2)
    async with running(settings) as c:
        await batch(c, identify("i", user="u1", email="a@s.example"))
        calls = [page(f"p{i}", "https://s.example/", user="u1") for i in range(3)]
        status, reply, heads = await post(c, "/v1/batch", {"batch": calls})
        assert status == 503 and "try again later" in reply["message"]
        assert heads["Retry-After"] == "5"
        assert await spool(c).pending(10) == []


async def test_segment_requests_count_toward_the_ingest_bound_and_hear_503_at_once(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, segment_write_keys=(WRITE_KEY,), max_in_flight=2)
    async with running(settings) as c, half_sent(c.url), half_sent(c.url):
        await asyncio.sleep(0.2)  # both are in hand, waiting for their bodies
        for path in PATHS:
            status, reply, heads = await post(c, path, {"batch": []})
            assert (status, heads["Retry-After"]) == (503, "1")
            assert reply["message"].startswith("events not stored, try again later")


async def test_a_repeated_message_id_is_stored_once(seg: Running) -> None:
    await batch(seg, identify("i1", user="u1", email="a@s.example"))
    calls = [page("p1", "https://s.example/1", user="u1"), page("p2", "https://s.example/2",
                                                                  user="u1")]  # fmt: skip
    await batch(seg, *calls)
    await batch(seg, *calls, page("p3", "https://s.example/3", user="u1"))
    assert [q["page"] for q in await queued(seg)] == [
        '{"location":"https://s.example/1"}',
        '{"location":"https://s.example/2"}',
        '{"location":"https://s.example/3"}',
    ]
    assert await metric(seg, 'duplicate_events_total{endpoint="segment"}') == 2


# -- people -----------------------------------------------------------------------------------


async def test_calls_before_identify_wait_and_go_in_order_with_the_contact_it_names(
    seg: Running,
) -> None:
    await batch(seg, page("p1", "https://s.example/1", anon="a1"),
                track("t1", "Product Viewed", anon="a1", product_id="mug", price=12))  # fmt: skip
    await batch(seg, page("p2", "https://s.example/2", anon="a1"))
    assert await queued(seg) == []
    await batch(seg, identify("i1", user="u1", anon="a1", email="Jane@S.Example"),
                page("p3", "https://s.example/3", user="u1"),
                page("p4", "https://s.example/4", anon="a1"))  # fmt: skip
    events = await queued(seg)
    assert [e["type"] for e in events] == ["pageViewed", "productViewed", "pageViewed",
                                           "pageViewed", "pageViewed"]  # fmt: skip
    assert [e.get("page", "")[-4:] for e in events] == ['/1"}', "", '/2"}', '/3"}', '/4"}']
    assert {(e["email"], e["externalCustomerId"]) for e in events} == {("jane@s.example", "u1")}
    assert await spool(seg).held("segment:a:a1") == []


async def test_alias_before_identify_makes_the_visitors_calls_wait_for_the_user(
    seg: Running,
) -> None:
    await batch(seg, page("p1", "https://s.example/1", anon="a1"))
    await batch(seg, {"type": "alias", "previousId": "a1", "userId": "u1", "messageId": "al"})
    await batch(seg, page("p2", "https://s.example/2", anon="a1"))  # a1 is u1 now
    assert await queued(seg) == []
    await batch(seg, identify("i1", user="u1", email="jane@s.example"))
    assert [e["page"][-4:] for e in await queued(seg)] == ['/1"}', '/2"}']


async def test_alias_of_an_older_user_id_brings_its_waiting_calls_along(seg: Running) -> None:
    await batch(seg, page("p1", "https://s.example/1", user="old-id"))
    await batch(seg, {"type": "alias", "previousId": "old-id", "userId": "u1", "messageId": "al"})
    await batch(seg, page("p2", "https://s.example/2", user="old-id"))
    await batch(seg, identify("i1", user="u1", email="jane@s.example"))
    events = await queued(seg)
    assert [e["page"][-4:] for e in events] == ['/1"}', '/2"}']
    assert {e["externalCustomerId"] for e in events} == {"u1"}


async def test_alias_to_a_known_user_releases_the_visitors_calls_with_its_contact(
    seg: Running,
) -> None:
    await batch(seg, identify("i1", user="u1", phone="+380501234567"))
    await batch(seg, page("p1", "https://s.example/1", anon="a1"))
    await batch(seg, {"type": "alias", "previousId": "a1", "userId": "u1", "messageId": "al"})
    [event] = await queued(seg)
    assert (event["phone"], event["externalCustomerId"]) == ("380501234567", "u1")


async def test_context_traits_identify_like_identify(seg: Running) -> None:
    # Mobile SDKs send the user's traits with every call, in context.traits.
    call = page("p1", "https://s.example/1", anon="a9")
    call["context"] = {"traits": {"email": "m@s.example"}}
    await batch(seg, page("p0", "https://s.example/0", anon="a9"), call)
    assert [e["email"] for e in await queued(seg)] == ["m@s.example", "m@s.example"]


async def test_an_order_of_a_user_not_identified_goes_with_the_user_id_as_customer(
    seg: Running,
) -> None:
    item = {"product_id": "p1", "name": "Mug", "price": 10, "quantity": 1,
            "url": "https://s.example/p1", "image_url": "https://s.example/p1.jpg"}  # fmt: skip
    await batch(seg, track("o1", "Order Completed", user="u7", order_id="1001", total=10,
                           products=[item]))  # fmt: skip
    [order] = await queued(seg)
    assert (order["type"], order["externalCustomerId"], order["externalOrderId"]) == (
        "orderCreated", "u7", "1001")  # fmt: skip
    assert "email" not in order


async def test_an_identify_whose_traits_name_a_wrong_email_is_rejected_and_kept(
    seg: Running,
) -> None:
    await batch(seg, identify("i1", user="u1", email="not-an-email"))
    [kept] = await spool(seg).rejected(10)
    assert kept.reason == "bad_contact" and kept.detail.startswith("traits.email:")


# -- carts ------------------------------------------------------------------------------------


async def test_carts_are_whole_carts_built_one_product_at_a_time(seg: Running) -> None:
    user = {"user": "u1"}
    mug = {"product_id": "mug", "price": 12.5, "name": "Mug"}
    await batch(
        seg,
        identify("i1", user="u1", email="jane@s.example"),
        track("c1", "Product Added", **user, **mug, quantity=2, currency="EUR"),
        track("c2", "Product Added", **user, product_id="tee", price=20),
        track("c3", "Product Removed", **user, product_id="mug", quantity=1),
        track("c4", "Cart Viewed", **user),
        track("c5", "Product Removed", **user, product_id="tee"),
    )
    carts = [orjson.loads(e["products"]) for e in await queued(seg)]
    assert carts == [
        [{"productId": "mug", "quantity": 2, "price": 12.5, "name": "Mug"}],
        [{"productId": "mug", "quantity": 2, "price": 12.5, "name": "Mug"},
         {"productId": "tee", "price": 20, "quantity": 1}],
        [{"productId": "mug", "quantity": 1, "price": 12.5, "name": "Mug"},
         {"productId": "tee", "price": 20, "quantity": 1}],
        [{"productId": "mug", "quantity": 1, "price": 12.5, "name": "Mug"},
         {"productId": "tee", "price": 20, "quantity": 1}],
        [{"productId": "mug", "quantity": 1, "price": 12.5, "name": "Mug"}],
    ]  # fmt: skip
    assert (await queued(seg))[0]["currencyCode"] == "EUR"


async def test_a_visitors_cart_joins_the_users_and_order_completed_empties_it(
    seg: Running,
) -> None:
    await batch(seg, identify("i0", user="u1", email="jane@s.example"),
                track("c0", "Product Added", user="u1", product_id="old", price=1))  # fmt: skip
    await batch(seg, track("c1", "Product Added", anon="a1", product_id="mug", price=5))
    await batch(seg, identify("i1", user="u1", anon="a1", email="jane@s.example"),
                track("c2", "Product Added", user="u1", product_id="tee", price=7))  # fmt: skip
    *_, joined = await queued(seg)
    assert [p["productId"] for p in orjson.loads(joined["products"])] == ["old", "mug", "tee"]
    await batch(seg, track("o1", "Order Completed", user="u1", order_id="9", total=0),
                track("c3", "Product Added", anon="a1", product_id="new", price=3))  # fmt: skip
    *_, fresh = await queued(seg)
    assert orjson.loads(fresh["products"]) == [{"productId": "new", "price": 3, "quantity": 1}]


async def test_a_cart_change_is_applied_once_when_its_call_is_sent_again(seg: Running) -> None:
    await batch(seg, identify("i1", user="u1", email="jane@s.example"))
    added = track("c1", "Product Added", user="u1", product_id="mug", price=5)
    await batch(seg, added)
    await batch(seg, added)  # the SDK did not hear the first answer
    await batch(seg, track("c2", "Cart Viewed", user="u1"))
    *_, viewed = await queued(seg)
    assert orjson.loads(viewed["products"]) == [{"productId": "mug", "price": 5, "quantity": 1}]


# -- calls that become no event -------------------------------------------------------------


async def test_a_call_that_cannot_become_an_event_gets_200_and_is_counted_logged_and_kept(
    seg: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "collector.segment")
    bad = track("t1", "Product Viewed", user="u1", name="no id")
    await batch(seg, bad, page("p1", "https://s.example/", user="u1"))
    [kept] = await spool(seg).rejected(10)
    assert (kept.source, kept.reason, kept.message_id) == ("segment", "no_product_id", "t1")
    assert orjson.loads(kept.body) == bad
    assert await metric(seg, 'segment_rejected_calls_total{reason="no_product_id"}') == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "t1" in line and "no_product_id" in line and "product_id or sku" in line
    assert len(await spool(seg).held("segment:u:u1")) == 1  # the good call beside it


async def test_group_is_ignored_and_custom_events_can_be_left_out_counted(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, segment_write_keys=(WRITE_KEY,), segment_custom_events=False)
    async with running(settings) as c:
        await batch(c, identify("i1", user="u1", email="jane@s.example"),
                    {"type": "group", "userId": "u1", "groupId": "g1", "messageId": "g"},
                    track("t1", "Signed Up", user="u1"),
                    track("t2", "Product Viewed", user="u1", sku="s1", price=1))  # fmt: skip
        assert [e["type"] for e in await queued(c)] == ["productViewed"]
        assert await metric(c, 'segment_ignored_calls_total{reason="group"}') == 1
        assert await metric(c, 'segment_ignored_calls_total{reason="custom_events_off"}') == 1
        assert await spool(c).rejected(10) == []


async def test_the_time_sent_is_corrected_for_the_senders_clock(seg: Running) -> None:
    # The sender's clock is a day fast: its order date comes out as our time, a day back.
    await batch(seg, identify("i1", user="u1", email="jane@s.example"))
    fast = 24 * 3600 * 1000
    now = int(time.time() * 1000)
    call = track("o1", "Order Completed", user="u1", order_id="1", total=0)
    call["timestamp"] = now + fast - 60_000  # a minute before it was sent
    await batch(seg, call, sentAt=now + fast)
    [order] = [e for e in await queued(seg) if e["type"] == "orderCreated"]
    date = datetime.datetime.fromisoformat(order["date"]).replace(tzinfo=datetime.UTC)
    assert abs(date.timestamp() * 1000 - (now - 60_000)) < 10_000
