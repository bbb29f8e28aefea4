"""The ingest endpoints over real HTTP against a real uvicorn server."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.config import Settings
from collector.spool import Spool

from .conftest import API_KEY, Running, make_settings, running


def page_view(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "contact": {"email": f"  Visitor{i}@Example.com "},
        "properties": {"location": f"https://shop.example/p/{i}"},
        **extra,
    }


def order_created(order_id: str = "1001", **props: Any) -> dict[str, Any]:
    return {
        "type": "orderCreated",
        "contact": {"phone": "+38 (050) 123-45-67", "externalCustomerId": "AV13760"},
        "properties": {
            "externalOrderId": order_id,
            "totalCost": 990,
            "status": "INITIALIZED",
            "date": "2020-05-14T10:11:00",
            "items": [
                {
                    "externalItemId": "200600",
                    "name": "Super Device",
                    "quantity": 1,
                    "cost": 990,
                    "url": "http://example.com/item/200600",
                    "imageUrl": "http://example.com/item/200600/image.png",
                }
            ],
            **props,
        },
    }


def basic(key: str = API_KEY) -> dict[str, str]:
    token = base64.b64encode(f"any-user:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def spool_of(c: Running) -> Spool:
    spool: Spool = c.app.state.spool
    return spool


async def stored_bodies(c: Running) -> list[dict[str, Any]]:
    return [orjson.loads(r.body) for r in await spool_of(c).pending(10_000)]


async def test_single_event_is_stored_in_yespo_form(collector: Running) -> None:
    status, reply = await collector.post("/v1/events", page_view(1))
    assert status == 200
    assert reply == {"accepted": 1, "duplicates": 0, "rejected": []}
    [body] = await stored_bodies(collector)
    assert body == {
        "eventTypeKey": "pageViewed",
        "keyValue": "visitor1@example.com",
        "params": [
            {"name": "email", "value": "visitor1@example.com"},
            {"name": "page", "value": '{"location":"https://shop.example/p/1"}'},
        ],
    }


async def test_bad_event_in_batch_does_not_harm_the_good_ones(collector: Running) -> None:
    bad_item = order_created("2002")
    del bad_item["properties"]["items"][0]["url"]
    batch = [page_view(0), {**bad_item, "messageId": "order-2002"}, page_view(2), {"type": "x"}]
    status, reply = await collector.post("/v1/events", {"batch": batch})
    assert status == 200
    assert reply["accepted"] == 2
    rejected = {r["index"]: r for r in reply["rejected"]}
    assert set(rejected) == {1, 3}
    assert rejected[1]["messageId"] == "order-2002"
    assert [e["field"] for e in rejected[1]["errors"]] == ["properties.items[0].url"]
    assert any(e["field"] == "contact" for e in rejected[3]["errors"])
    keys = [b["keyValue"] for b in await stored_bodies(collector)]
    assert keys == ["visitor0@example.com", "visitor2@example.com"]


async def test_an_integer_past_64_bits_gets_one_verdict_whatever_is_beside_it(
    collector: Running,
) -> None:
    # The plain body is read into structs, one with an unknown field by orjson: orjson reads
    # such an integer as a float, and both readings must judge the event the same.
    event = (
        b'{"type":"productViewed","messageId":"big-%d","contact":{"email":"a@b.co"},'
        b'"properties":{"productId":"p","price":99999999999999999999}}'
    )
    typo = b'{"type":"pageViewed","contakt":{}}'
    replies = []
    for n, body in enumerate((event, b'{"batch":[%s,%s]}' % (event, typo))):
        async with collector.http.post(
            collector.url + "/v1/events", data=body % n, headers=collector.auth()
        ) as resp:
            replies.append((resp.status, (await resp.json())["accepted"]))
    assert replies == [(200, 1), (200, 1)]
    products = [
        next(orjson.loads(p["value"]) for p in body["params"] if p["name"] == "product")
        for body in await stored_bodies(collector)
    ]
    assert [p["price"] for p in products] == [1e20, 1e20]


async def test_nothing_accepted_is_a_400_with_every_reason(collector: Running) -> None:
    status, reply = await collector.post("/v1/events", {"type": "pageViewed", "contact": {}})
    assert status == 400
    assert reply["accepted"] == 0
    fields = {e["field"] for e in reply["rejected"][0]["errors"]}
    assert {"contact", "properties"} <= fields or {"contact", "properties.location"} <= fields
    assert await stored_bodies(collector) == []


async def test_repeat_message_id_is_acknowledged_once(collector: Running) -> None:
    event = page_view(7, messageId="web-7")
    assert (await collector.post("/v1/events", event))[1]["duplicates"] == 0
    status, reply = await collector.post("/v1/events", {"batch": [event, page_view(8)]})
    assert status == 200
    assert reply == {"accepted": 2, "duplicates": 1, "rejected": []}
    assert len(await stored_bodies(collector)) == 2


async def test_missing_or_unknown_key_is_401(collector: Running) -> None:
    status, reply = await collector.post("/v1/events", page_view(), headers={})
    assert status == 401 and "Bearer" in reply["error"]
    status, reply = await collector.post("/v1/events", page_view(), headers=collector.auth("nope"))
    assert (status, reply) == (401, {"error": "unknown API key"})
    async with collector.http.post(collector.url + "/v1/events", json=page_view()) as resp:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await stored_bodies(collector) == []


async def test_other_methods_on_the_events_path_are_405(collector: Running) -> None:
    async with collector.http.get(collector.url + "/v1/events", headers=collector.auth()) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"


async def test_unknown_paths_and_methods_are_answered_in_json_with_a_hint(
    collector: Running,
) -> None:
    async def call(method: str, path: str) -> tuple[int, dict[str, str], Any]:
        async with collector.http.request(
            method, collector.url + path, json=page_view(), headers=collector.auth()
        ) as resp:
            assert resp.content_type == "application/json"
            return resp.status, dict(resp.headers), await resp.json()

    status, _, reply = await call("POST", "/v1/event")
    assert (status, reply) == (
        404, {"error": "no such endpoint: POST /v1/event; did you mean POST /v1/events?"}
    )  # fmt: skip
    status, _, reply = await call("GET", "/healthy")
    assert (status, reply) == (
        404, {"error": "no such endpoint: GET /healthy; did you mean GET /healthz?"}
    )  # fmt: skip
    status, _, reply = await call("GET", "/favicon.ico")
    assert (status, reply) == (404, {"error": "no such endpoint: GET /favicon.ico"})

    status, headers, reply = await call("GET", "/v1/events")
    assert (status, headers["Allow"]) == (405, "POST")
    assert reply == {"error": "GET is not allowed on /v1/events (allowed: POST)"}
    status, headers, reply = await call("DELETE", "/metrics")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert reply == {"error": "DELETE is not allowed on /metrics (allowed: GET, HEAD)"}


async def test_a_body_in_several_chunks_is_read_whole(collector: Running) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        data = orjson.dumps({"batch": [page_view(i) for i in range(50)]})
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    headers = collector.auth()
    async with collector.http.post(
        collector.url + "/v1/events", data=chunks(), headers=headers
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["accepted"] == 50


async def test_body_that_is_not_json_is_a_400(collector: Running) -> None:
    async with collector.http.post(
        collector.url + "/v1/events", data=b"{nope", headers=collector.auth()
    ) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]
    status, reply = await collector.post("/v1/events", [page_view()])
    assert status == 400 and "batch" in reply["error"]


async def test_documented_batch_of_500_events_and_1_mb_is_taken(collector: Running) -> None:
    filler = "x" * 1950  # locations stay under the 2048-character limit
    batch = [
        page_view(i, properties={"location": f"https://s.example/{i}?{filler}"}) for i in range(500)
    ]
    assert len(orjson.dumps({"batch": batch})) > 1_000_000
    status, reply = await collector.post("/v1/events", {"batch": batch})
    assert (status, reply["accepted"]) == (200, 500)


async def test_oversized_body_and_batch_are_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=1_000_000, max_batch_events=500)
    async with running(settings) as c:
        status, reply = await c.post("/v1/events", {"batch": [page_view(0)] * 501})
        assert status == 413 and "501" in reply["error"]
        big = page_view(0, properties={"location": "https://s.example/?" + "y" * 1_000_001})
        status, reply = await c.post("/v1/events", big)
        assert status == 413
        assert await stored_bodies(c) == []


async def test_full_spool_is_503_with_retry_after_and_stores_nothing(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, spool_max_events=3)) as c:
        assert (await c.post("/v1/events", {"batch": [page_view(0), page_view(1)]}))[0] == 200
        async with c.http.post(
            c.url + "/v1/events", json={"batch": [page_view(2), page_view(3)]}, headers=c.auth()
        ) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) > 0
            assert "try again" in (await resp.json())["error"]
        assert len(await stored_bodies(c)) == 2
        async with c.http.get(c.url + "/readyz") as resp:
            assert resp.status == 200  # 2 of 3: still room for one
        assert (await c.post("/v1/events", page_view(4)))[0] == 200
        async with c.http.get(c.url + "/readyz") as resp:
            assert resp.status == 503
            assert "full" in (await resp.json())["spool"]


async def test_yespo_generate_event_body_with_basic_auth(collector: Running) -> None:
    body = {
        "eventTypeKey": "productCategoryViewed",
        "keyValue": "example@email.com",
        "params": [
            {"name": "email", "value": "example@email.com"},
            {"name": "category", "value": '{"productCategoryId":"Mugs"}'},
        ],
    }
    for path in ("/api/v1/event", "/api/v2/event"):
        async with collector.http.post(collector.url + path, json=body, headers=basic()) as resp:
            assert resp.status == 200
            assert await resp.read() == b""
    stored = await stored_bodies(collector)
    assert len(stored) == 2 and stored[0]["eventTypeKey"] == "productCategoryViewed"


async def test_yespo_event_errors_are_shaped_like_yespo(collector: Running) -> None:
    body = {"eventTypeKey": "bad/name", "keyValue": "x@example.com", "params": []}
    status, reply = await collector.post("/api/v1/event", body, headers=basic())
    assert status == 400
    assert "eventTypeKey" in reply["message"]
    assert reply["errors"][0]["field"] == "eventTypeKey"
    status, reply = await collector.post("/api/v1/event", body, headers=collector.auth())
    assert status == 401 and "message" in reply


async def test_yespo_add_orders_reports_failed_orders_and_keeps_the_rest(
    collector: Running,
) -> None:
    good = {
        "externalOrderId": "100500",
        "externalCustomerId": "12345",
        "totalCost": 1000,
        "status": "INITIALIZED",
        "date": "2017-03-08T09:30:00+02:00",
        "email": "John@Example.com",
        "shipping": 10,
        "items": [
            {
                "externalItemId": "200600",
                "name": "Super Device",
                "quantity": 1,
                "cost": 990,
                "url": "http://example.com/item/200600",
                "imageUrl": "http://example.com/item/200600/image.png",
            }
        ],
    }
    bad = {**good, "externalOrderId": "100501", "status": "SHIPPED"}
    status, reply = await collector.post("/api/v1/orders", {"orders": [good, bad]}, headers=basic())
    assert status == 200
    [failed] = reply["failedOrders"]
    assert (failed["index"], failed["externalOrderId"]) == (1, "100501")
    assert failed["errors"][0]["field"] == "orders[1].status"
    [record] = await spool_of(collector).pending(10)
    assert record.kind == "order"
    order = orjson.loads(record.body)
    assert (order["date"], order["email"]) == ("2017-03-08T07:30:00", "john@example.com")


async def test_yespo_add_orders_over_1000_is_refused(collector: Running) -> None:
    status, reply = await collector.post("/api/v1/orders", {"orders": [{}] * 1001}, headers=basic())
    assert status == 400 and "1000" in reply["message"]


async def test_health_readiness_and_metrics(collector: Running) -> None:
    await collector.post("/v1/events", {"batch": [page_view(1), {"type": "pageViewed"}]})
    async with collector.http.get(collector.url + "/healthz") as resp:
        assert resp.status == 200
    async with collector.http.get(collector.url + "/readyz") as resp:
        ready = await resp.json()
        assert resp.status == 200 and ready["ready"] and ready["depth"] == 1
    async with collector.http.get(collector.url + "/metrics") as resp:
        text = await resp.text()
    assert 'accepted_events_total{endpoint="events"} 1.0' in text
    assert 'rejected_events_total{endpoint="events"} 1.0' in text
    assert "spool_depth 1.0" in text


async def test_metrics_leave_out_the_created_series(collector: Running) -> None:
    await collector.post("/v1/events", {"batch": [page_view(1), {"type": "pageViewed"}]})
    async with collector.http.get(collector.url + "/metrics") as resp:
        text = await resp.text()
    assert "_created" not in text
    # ...and the series they stood beside are all there.
    assert 'received_events_total{endpoint="events"} 2.0' in text
    assert "spool_append_seconds_count 1.0" in text


async def test_add_orders_entry_that_is_not_an_object_is_named_by_index(
    collector: Running,
) -> None:
    status, reply = await collector.post("/api/v1/orders", {"orders": ["nope"]}, headers=basic())
    assert status == 200
    [failed] = reply["failedOrders"]
    assert failed["errors"][0]["field"] == "orders[0]"


async def test_add_orders_echoes_only_ids_it_can_write_and_never_fails_after_storing(
    collector: Running,
) -> None:
    good = {k: v for k, v in order_created("3003")["properties"].items()}
    good |= {"externalCustomerId": "c1", "email": "a@b.co"}
    nested: Any = "x"
    for _ in range(300):  # too deep for orjson to write back
        nested = {"id": nested}
    bad = {**good, "externalOrderId": nested}
    status, reply = await collector.post("/api/v1/orders", {"orders": [good, bad]}, headers=basic())
    assert status == 200
    [failed] = reply["failedOrders"]
    assert failed["index"] == 1 and "externalOrderId" not in failed
    assert len(await stored_bodies(collector)) == 1


async def test_a_client_that_leaves_mid_body_is_no_error(
    collector: Running, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = collector.url.removeprefix("http://").split(":")
    for path in ("/api/v1/event", "/lib/y"):
        _reader, writer = await asyncio.open_connection(host, int(port))
        auth = basic()["Authorization"]
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            'Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n{"a":'.encode()
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_bad_event_beside_a_context_orjson_cannot_read_harms_no_one(
    collector: Running,
) -> None:
    # The structs skip `context`; orjson refuses 1e999 in it. The refused neighbour sends
    # the body to orjson again, which must not take the good event down with it.
    good = (
        b'{"type":"pageViewed","contact":{"email":"a@b.co"},'
        b'"properties":{"location":"https://shop.example/"},"context":{"n":1e999}}'
    )
    bad = b'{"type":"pageViewed","contact":{"email":"a@b.co"},"properties":{}}'
    async with collector.http.post(
        collector.url + "/v1/events",
        data=b'{"batch":[%s,%s]}' % (good, bad),
        headers=collector.auth(),
    ) as resp:
        reply = await resp.json()
        assert resp.status == 200, reply
    assert reply["accepted"] == 1 and [r["index"] for r in reply["rejected"]] == [1]


async def test_a_401_says_where_the_key_came_from_when_the_collector_made_one_up(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({}, spool_url=f"sqlite:///{tmp_path}/spool.db", forward=False)
    assert settings.generated_key
    async with running(settings) as c:
        bad_key = {"Authorization": "Bearer dev-key"}
        status, body = await c.post("/v1/events", page_view(), headers=bad_key)
        assert status == 401
        assert "no COLLECTOR_API_KEYS is set" in body["error"]
        assert "logged it at start-up" in body["error"]
        status, _ = await c.post("/v1/events", page_view(), headers=c.auth(settings.api_keys[0]))
        assert status == 200
