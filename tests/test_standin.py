"""The Yespo stand-in over real HTTP: Yespo's checks, the recording, the faults, the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from standin import Faults, FaultsError, RejectIf, StandIn
from standin.checks import MAX_EVENT_BODY

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-yespo-key"
AUTH = aiohttp.encode_basic_auth("any-user", KEY)


def event(i: int = 0, **params: str) -> dict[str, Any]:
    return {
        "eventTypeKey": "pageViewed",
        "keyValue": f"visitor{i}@example.com",
        "params": [
            {"name": "email", "value": f"visitor{i}@example.com"},
            {"name": "page", "value": '{"location":"https://shop.example/p"}'},
            *({"name": name, "value": value} for name, value in params.items()),
        ],
    }


def order(order_id: str = "1001", **fields: Any) -> dict[str, Any]:
    return {
        "externalOrderId": order_id,
        "externalCustomerId": "AV13760",
        "totalCost": 990,
        "status": "INITIALIZED",
        "date": "2020-05-14T10:11:00",
        "phone": "380501234567",
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
        **fields,
    }


@pytest.fixture
async def yespo() -> AsyncIterator[StandIn]:
    async with StandIn(api_key=KEY) as stand_in:
        yield stand_in


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    auth: str | None = AUTH,
    **kw: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    async with http.post(url, data=data, headers=headers, **kw) as resp:
        text = await resp.text()
        parsed = orjson.loads(text) if resp.content_type == "application/json" else text
        return resp.status, parsed, resp


async def control(
    http: aiohttp.ClientSession, yespo: StandIn, method: str, path: str, body: Any = None
) -> Any:
    data = None if body is None else orjson.dumps(body)
    async with http.request(method, yespo.control_url + path, data=data) as resp:
        payload = orjson.loads(await resp.read())
        if resp.status != 200:
            return resp.status, payload
        return payload


# -- Generate event --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_valid_event_gets_empty_200_and_is_recorded(
    yespo: StandIn, http: aiohttp.ClientSession, version: str
) -> None:
    status, body, _ = await post(http, f"{yespo.url}/{version}/event", event(1))
    assert (status, body) == (200, "")
    [recorded] = yespo.events
    assert recorded.body == event(1)
    assert recorded.path == f"/api/{version}/event"
    assert recorded.seq == 1
    assert abs(recorded.at - time.time() * 1000) < 5000


@pytest.mark.parametrize(
    "auth",
    [aiohttp.encode_basic_auth("user", "wrong"), None],
    ids=["wrong key", "no auth"],
)
async def test_wrong_or_missing_key_is_401_with_text_and_nothing_recorded(
    yespo: StandIn, http: aiohttp.ClientSession, auth: str | None
) -> None:
    status, body, resp = await post(http, f"{yespo.url}/v1/event", event(), auth=auth)
    assert status == 401
    assert resp.content_type == "text/plain" and body
    assert yespo.events == []


async def test_any_user_name_is_accepted(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    for user in ("a", "someone@shop.example", ""):
        auth = aiohttp.encode_basic_auth(user, KEY)
        status, _, _ = await post(http, f"{yespo.url}/v1/event", event(), auth=auth)
        assert status == 200
    assert len(yespo.events) == 3


async def test_non_string_param_value_is_400_naming_it(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    body = event()
    body["params"].append({"name": "price", "value": 19.99})
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", body)
    assert status == 400
    assert "params[2].value (price)" in reply["message"]
    assert "string" in reply["message"]
    assert yespo.events == []


def padded_event(size: int) -> bytes:
    """A valid event body of exactly `size` bytes."""
    body = event()
    body["params"].append({"name": "pad", "value": ""})
    pad = size - len(orjson.dumps(body))
    body["params"][-1]["value"] = "x" * pad
    raw = orjson.dumps(body)
    assert len(raw) == size
    return raw


async def test_body_of_20000_bytes_is_accepted_and_one_more_is_400(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await post(http, f"{yespo.url}/v1/event", padded_event(MAX_EVENT_BODY))
    assert status == 200
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", padded_event(MAX_EVENT_BODY + 1))
    assert status == 400
    assert "20001 bytes" in reply["message"]
    assert len(yespo.events) == 1


@pytest.mark.parametrize("char", list("<;'\\/|\"`^?!,>"))
async def test_forbidden_character_in_event_type_key_is_400(
    yespo: StandIn, http: aiohttp.ClientSession, char: str
) -> None:
    body = {**event(), "eventTypeKey": f"page{char}Viewed"}
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", body)
    assert status == 400
    assert "eventTypeKey" in reply["message"] and char in reply["message"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"eventTypeKey": "k" * 101}, "eventTypeKey"),
        ({"eventTypeKey": ""}, "eventTypeKey"),
        ({"keyValue": "v" * 301}, "keyValue"),
        ({"keyValue": 380501234567}, "keyValue"),
        ({"params": {"email": "a@b.c"}}, "params"),
        ({"params": [{"name": "email"}]}, "params[0]"),
        ({"params": [{"name": "a", "value": "b", "type": "c"}]}, "params[0]"),
        ({"params": [{"name": "items", "value": [{"id": 1}]}]}, "params[0].value"),
        ({"extra": 1}, "unexpected ['extra']"),
    ],
)
async def test_malformed_event_is_400_naming_the_problem(
    yespo: StandIn, http: aiohttp.ClientSession, change: dict[str, Any], named: str
) -> None:
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", {**event(), **change})
    assert status == 400
    assert named in reply["message"]


async def test_limits_themselves_are_accepted(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    body = {**event(), "eventTypeKey": "k" * 100, "keyValue": "v" * 300}
    status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
    assert status == 200


async def test_body_that_is_not_json_is_400(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", b"{not json")
    assert status == 400
    assert "not JSON" in reply["message"]


# -- events Yespo answers 200 and then ignores -------------------------------------------


def order_event(kind: str, order_id: str = "1001", **params: str) -> dict[str, Any]:
    """A Generate-event order body as seed 000 gives it; `params` replace or add fields."""
    fields = {"phone": "380501234567", "externalCustomerId": "AV13760", "externalOrderId": order_id}
    if kind == "orderCreated":
        fields |= {"totalCost": "990", "status": "INITIALIZED", "date": "2020-05-14T10:11:00"}
    fields |= params
    return {
        "eventTypeKey": kind,
        "keyValue": "380501234567",
        "params": [{"name": name, "value": value} for name, value in fields.items()],
    }


async def test_event_naming_no_contact_gets_200_but_is_recorded_as_ignored(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    anonymous = {**event(), "params": event()["params"][1:]}  # the page only
    blank = event()
    blank["params"][0]["value"] = " "
    for body in (anonymous, blank):
        status, reply, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert (status, reply) == (200, "")
    assert yespo.events == []
    assert [r.body for r in yespo.ignored] == [anonymous, blank]
    assert "names no contact" in yespo.ignored[0].reason
    assert "params given: page" in yespo.ignored[0].reason


@pytest.mark.parametrize("name", ["EmailAddress", "sms", "CONTACTKEY", "Contact_id", "PushToken"])
async def test_contact_param_names_are_found_case_ignored(
    yespo: StandIn, http: aiohttp.ClientSession, name: str
) -> None:
    body = {**event(), "params": [{"name": name, "value": "someone"}]}
    status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
    assert status == 200
    assert [r.body for r in yespo.events] == [body]
    assert yespo.ignored == []


async def test_order_event_needs_the_order_contact(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    by_customer = order_event("orderCreated", "1", phone="")
    by_contact_key = order_event("orderCreated", "2", phone="", externalCustomerId="")
    by_contact_key["params"].append({"name": "ContactKey", "value": "k-1"})
    for body in (by_customer, by_contact_key):
        status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert status == 200
    assert [r.body for r in yespo.events] == [by_customer]
    [ignored] = yespo.ignored
    assert ignored.body == by_contact_key
    assert "externalCustomerId, email or phone" in ignored.reason


SEED_ITEMS = (
    '[{"externalItemId":"200600","name":"Super Device","category":"devices","quantity":1,'
    '"cost":990,"url":"http://example.com/item/200600",'
    '"imageUrl":"http://example.com/item/200600/image.png"}]'
)


async def test_complete_order_events_are_recorded(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    bodies = [
        order_event("orderCreated", currency="UAH", items=SEED_ITEMS),
        order_event("orderUpdated", status="IN_PROGRESS", date="2020-05-15T09:00:00"),
        order_event("orderDelivered"),
    ]
    for body in bodies:
        status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert status == 200
    assert [r.body for r in yespo.events] == bodies
    assert yespo.ignored == []


@pytest.mark.parametrize("name", ["externalOrderId", "totalCost", "status", "date"])
async def test_order_created_missing_a_required_param_is_ignored(
    yespo: StandIn, http: aiohttp.ClientSession, name: str
) -> None:
    body = order_event("orderCreated")
    body["params"] = [p for p in body["params"] if p["name"] != name]
    status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
    assert status == 200
    assert yespo.events == []
    [ignored] = yespo.ignored
    assert ignored.reason == f"orderCreated without required param(s): {name}"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"status": "SHIPPED"}, "status must be one of"),
        ({"status": "initialized"}, "status must be one of"),
        ({"date": "2020-05-14T10:11:00+02:00"}, "date must be YYYY-MM-ddTHH:mm:ss"),
        ({"date": "14.05.2020 10:11"}, "date must be YYYY-MM-ddTHH:mm:ss"),
        ({"date": "2020-13-14T10:11:00"}, "date must be YYYY-MM-ddTHH:mm:ss"),
        (
            {"items": SEED_ITEMS.replace('"url"', '"link"')},
            "items[0] without required field(s): url",
        ),
        ({"items": '{"externalItemId":"200600"}'}, "items must be a JSON string of an array"),
    ],
)
async def test_order_event_with_a_bad_status_date_or_item_is_ignored(
    yespo: StandIn, http: aiohttp.ClientSession, change: dict[str, str], named: str
) -> None:
    created = order_event("orderCreated", "2")
    bodies = [
        order_event("orderCreated", **change),
        created,
        order_event("orderUpdated", "2", **change),
    ]
    for body in bodies:
        status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert status == 200
    assert [r.body for r in yespo.events] == [created]
    assert [r.reason.startswith(named) for r in yespo.ignored] == [True, True]


@pytest.mark.parametrize("kind", ["orderDelivered", "orderCancelled"])
async def test_delivered_or_cancelled_for_an_order_yespo_lacks_is_ignored(
    yespo: StandIn, http: aiohttp.ClientSession, kind: str
) -> None:
    async def send(body: dict[str, Any]) -> None:
        status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert status == 200

    await send(order_event(kind, "1"))  # never created
    await send(order_event("orderCreated", "2", status="NEW"))  # ignored: Yespo lacks it still
    await send(order_event(kind, "2"))
    await send(order_event("orderCreated", "3"))  # created by Generate event
    await send(order_event(kind, "3"))
    await post(http, f"{yespo.url}/v1/orders", {"orders": [order("4")]})  # by Add orders
    await send(order_event(kind, "4"))
    assert [(r.body["eventTypeKey"], r.body["params"][2]["value"]) for r in yespo.events] == [
        ("orderCreated", "3"),
        (kind, "3"),
        (kind, "4"),
    ]
    reasons = [r.reason for r in yespo.ignored]
    assert reasons[0] == reasons[2].replace("'2'", "'1'")
    assert reasons[0] == f"{kind} for order '1', which Yespo does not have"
    assert reasons[1].startswith("status must be one of")
    yespo.clear()  # a fresh Yespo has no orders
    await send(order_event(kind, "3"))
    assert yespo.events == [] and len(yespo.ignored) == 1


async def test_order_updated_for_a_new_order_follows_order_created_rules(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    partial = order_event("orderUpdated", "1", status="IN_PROGRESS")
    complete = order_event("orderUpdated", "2", totalCost="990", status="IN_PROGRESS")
    complete["params"].append({"name": "date", "value": "2020-05-14T10:11:00"})
    for body in (partial, complete, order_event("orderDelivered", "2")):
        status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert status == 200
    assert [r.body["eventTypeKey"] for r in yespo.events] == ["orderUpdated", "orderDelivered"]
    [ignored] = yespo.ignored
    assert ignored.body == partial
    assert (
        ignored.reason
        == "orderUpdated (order '1' is new) without required param(s): totalCost, date"
    )


async def test_ignored_events_are_read_counted_and_cleared_like_the_others(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    anonymous = {**event(), "params": event()["params"][1:]}
    await post(http, f"{yespo.url}/v1/event", event(1))
    await post(http, f"{yespo.url}/v2/event", anonymous)
    [waited] = await yespo.wait_for_ignored(1, within_s=1)
    assert waited.body == anonymous
    ignored = await control(http, yespo, "GET", "/ignored")
    assert ignored["last_seq"] == 1
    [record] = ignored["ignored"]
    assert (record["path"], record["body"], record["seq"]) == ("/api/v2/event", anonymous, 1)
    assert "names no contact" in record["reason"]
    events = await control(http, yespo, "GET", "/events")
    assert "reason" not in events["events"][0]
    stats = await control(http, yespo, "GET", "/stats")
    assert (stats["events"], stats["ignored"]) == (1, 1)
    assert stats["requests"] == {"/api/v1/event": {"200": 1}, "/api/v2/event": {"200": 1}}
    await control(http, yespo, "DELETE", "/events")
    assert (await control(http, yespo, "GET", "/ignored"))["ignored"] == []
    assert yespo.stats()["ignored"] == 0


# -- Add orders --------------------------------------------------------------------------


async def test_add_orders_lists_failed_orders_and_records_the_rest(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    no_item_url = order("3")
    del no_item_url["items"][0]["url"]
    no_contact = order("5")
    del no_contact["phone"]
    orders = [
        order("1"),
        order("2", status="SHIPPED"),
        no_item_url,
        order("4", email="a@b.c", externalCustomerId=None),
        no_contact,
        order("6", date="14.05.2020"),
        order("7", totalCost="990"),
        order("8", email="buyer@example.com"),
        order("9", date="2020-05-14T10:11:00+02:00"),
        order("10", date="2020-05-14T10:11:00.5"),
    ]
    status, reply, _ = await post(http, f"{yespo.url}/v1/orders", {"orders": orders})
    assert status == 200
    failed = {f["externalOrderId"]: f["message"] for f in reply["failedOrders"]}
    assert set(failed) == {"2", "3", "4", "5", "6", "7", "9", "10"}
    assert "status" in failed["2"]
    assert "items[0]" in failed["3"] and "url" in failed["3"]
    assert "externalCustomerId" in failed["4"]
    assert "email or phone" in failed["5"]
    assert "date" in failed["6"]
    assert "totalCost" in failed["7"]
    assert "date must be YYYY-MM-ddTHH:mm:ss" in failed["9"] and "date" in failed["10"]
    assert [r.body["externalOrderId"] for r in yespo.orders] == ["1", "8"]


@pytest.mark.parametrize("count", [0, 1001])
async def test_orders_outside_1_to_1000_are_400(
    yespo: StandIn, http: aiohttp.ClientSession, count: int
) -> None:
    body = {"orders": [order(str(i)) for i in range(count)]}
    status, reply, _ = await post(http, f"{yespo.url}/v1/orders", body)
    assert status == 400
    assert str(count) in reply["message"]
    assert yespo.orders == []


async def test_1000_orders_are_accepted(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    body = {"orders": [order(str(i)) for i in range(1000)]}
    status, reply, _ = await post(http, f"{yespo.url}/v1/orders", body)
    assert (status, reply) == (200, {"failedOrders": []})
    assert len(yespo.orders) == 1000


async def test_add_orders_upserts_by_external_order_id_and_keeps_the_log(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    await post(http, f"{yespo.url}/v1/orders", {"orders": [order("1"), order("2")]})
    await post(http, f"{yespo.url}/v1/orders", {"orders": [order("1", status="DELIVERED")]})
    assert yespo.latest_orders["1"]["status"] == "DELIVERED"
    assert yespo.latest_orders["2"]["status"] == "INITIALIZED"
    assert [(r.body["externalOrderId"], r.body["status"]) for r in yespo.orders] == [
        ("1", "INITIALIZED"),
        ("2", "INITIALIZED"),
        ("1", "DELIVERED"),
    ]
    latest = await control(http, yespo, "GET", "/orders/latest")
    assert latest["orders"]["1"]["status"] == "DELIVERED"


async def test_orders_need_the_key_too(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    body = {"orders": [order()]}
    status, _, _ = await post(http, f"{yespo.url}/v1/orders", body, auth=None)
    assert status == 401


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 502, 503, 400, 401, 403])
async def test_status_fault_answers_its_status_without_recording(
    yespo: StandIn, http: aiohttp.ClientSession, code: int
) -> None:
    await control(http, yespo, "POST", "/faults", {"status": code, "rate": 1.0})
    for _ in range(3):
        status, reply, _ = await post(http, f"{yespo.url}/v1/event", event())
        assert status == code
        if code == 400:
            assert reply["message"]
    status, _, _ = await post(http, f"{yespo.url}/v1/orders", {"orders": [order()]})
    assert status == code
    assert yespo.events == [] and yespo.orders == []
    await control(http, yespo, "DELETE", "/faults")
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event())
    assert status == 200


async def test_429_carries_retry_after(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    await control(http, yespo, "POST", "/faults", {"status": 429, "rate": 1.0, "retry_after": 2})
    status, _, resp = await post(http, f"{yespo.url}/v1/event", event())
    assert status == 429
    assert resp.headers["Retry-After"] == "2"


async def test_status_fault_with_times_ends_by_itself(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    yespo.faults = Faults(status=503, times=2)
    statuses = [(await post(http, f"{yespo.url}/v1/event", event(i)))[0] for i in range(4)]
    assert statuses == [503, 503, 200, 200]


async def test_throttle_answers_429_to_every_nth_request_beside_random_failures(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    await control(
        http, yespo, "POST", "/faults",
        {"status": 503, "rate": 0.2, "throttle_every": 9, "retry_after": 1, "seed": 3},
    )  # fmt: skip
    answers = [await post(http, f"{yespo.url}/v1/event", event(i)) for i in range(90)]
    statuses = [status for status, _, _ in answers]
    assert [n for n, s in enumerate(statuses, 1) if s == 429] == list(range(9, 91, 9))
    assert all(answers[n - 1][2].headers["Retry-After"] == "1" for n in range(9, 91, 9))
    failed = statuses.count(503)
    assert 0 < failed < 80 and statuses.count(200) == 80 - failed  # 10 of the 90 were 429
    assert len(yespo.events) == 80 - failed


async def test_delay_slows_the_answer_down(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    await control(http, yespo, "POST", "/faults", {"delay_ms": 200})
    started = time.monotonic()
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event())
    assert status == 200
    assert time.monotonic() - started >= 0.2
    assert len(yespo.events) == 1


async def test_hang_never_answers_so_the_client_times_out(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    await control(http, yespo, "POST", "/faults", {"hang": True})
    with pytest.raises(TimeoutError):
        await post(http, f"{yespo.url}/v1/event", event(), timeout=aiohttp.ClientTimeout(total=0.3))
    assert yespo.events == []
    assert yespo.stats()["requests"]["/api/v1/event"] == {"hung": 1}
    await control(http, yespo, "DELETE", "/faults")
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event())
    assert status == 200


async def test_stop_ends_a_hanging_request(http: aiohttp.ClientSession) -> None:
    stand_in = StandIn(api_key=KEY)
    url = await stand_in.start()
    stand_in.faults = Faults(hang=True)
    pending = asyncio.create_task(post(http, f"{url}/v1/event", event()))
    for _ in range(500):  # until the stand-in holds it
        if stand_in.held:
            break
        await asyncio.sleep(0.01)
    assert stand_in.held == 1
    started = time.monotonic()
    await stand_in.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending


async def test_drop_reply_records_the_event_but_the_client_sees_a_connection_error(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    await control(http, yespo, "POST", "/faults", {"drop_reply": 1.0})
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, f"{yespo.url}/v1/event", event(7))
    assert [r.body for r in yespo.events] == [event(7)]
    assert yespo.stats()["requests"]["/api/v1/event"] == {"dropped": 1}
    await control(http, yespo, "DELETE", "/faults")
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event(7))  # the client's retry
    assert status == 200
    assert [r.body for r in yespo.events] == [event(7), event(7)]


async def test_drop_reply_does_not_lose_replies_to_rejected_requests(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    yespo.faults = Faults(drop_reply=1.0)
    status, _, _ = await post(http, f"{yespo.url}/v1/event", {"eventTypeKey": "x"})
    assert status == 400


async def test_duplicate_detection_refuses_an_identical_body(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event(1))  # before the fault
    assert status == 200
    await control(http, yespo, "POST", "/faults", {"duplicate_detection": True})
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", event(1))
    assert status == 400
    assert "Duplicated request" in reply["message"]
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event(2))
    assert status == 200
    status, reply, _ = await post(http, f"{yespo.url}/v2/event", event(2))
    assert status == 400 and "Duplicated request" in reply["message"]
    assert len(yespo.events) == 2
    await control(http, yespo, "DELETE", "/faults")  # off by default: Yespo took it again
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event(2))
    assert status == 200


async def test_reject_if_refuses_matching_events_and_orders(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    plan = {"reject_if": {"param": "poison", "value": "yes"}}
    await control(http, yespo, "POST", "/faults", plan)
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", event(1, poison="yes"))
    assert status == 400 and "reject_if" in reply["message"]
    for body in (event(2, poison="no"), event(3)):
        status, _, _ = await post(http, f"{yespo.url}/v1/event", body)
        assert status == 200
    yespo.faults = Faults(reject_if=RejectIf("externalOrderId", "13", "unlucky"))
    orders = {"orders": [order("12"), order("13")]}
    status, reply, _ = await post(http, f"{yespo.url}/v1/orders", orders)
    assert reply == {"failedOrders": [{"externalOrderId": "13", "message": "unlucky"}]}
    assert [r.body["keyValue"] for r in yespo.events] == [
        "visitor2@example.com",
        "visitor3@example.com",
    ]


async def test_reject_if_can_answer_a_5xx_or_refuse_a_whole_add_orders_request(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    yespo.faults = Faults(reject_if=RejectIf("poison", "yes", "boom", status=500))
    status, reply, _ = await post(http, f"{yespo.url}/v1/event", event(1, poison="yes"))
    assert (status, reply) == (500, {"message": "boom"})
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event(2))
    assert status == 200

    plan = {
        "reject_if": {
            "param": "externalOrderId", "value": "13", "message": "unlucky", "whole_request": True
        }
    }  # fmt: skip
    assert (await control(http, yespo, "POST", "/faults", plan))["reject_if"]["status"] == 400
    orders = {"orders": [order("12"), order("13"), order("14")]}
    status, reply, _ = await post(http, f"{yespo.url}/v1/orders", orders)
    assert (status, reply) == (400, {"message": "unlucky (externalOrderId 13)"})
    assert yespo.orders == []  # one bad order spoils the request: none is taken
    orders = {"orders": [order("12"), order("14")]}
    status, reply, _ = await post(http, f"{yespo.url}/v1/orders", orders)
    assert (status, reply) == (200, {"failedOrders": []})
    assert sorted(yespo.latest_orders) == ["12", "14"]


async def test_key_change_at_runtime(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    assert await control(http, yespo, "POST", "/key", {"key": "new-key"}) == {"key_changed": True}
    status, _, _ = await post(http, f"{yespo.url}/v1/event", event())
    assert status == 401
    status, _, _ = await post(
        http, f"{yespo.url}/v1/event", event(), auth=aiohttp.encode_basic_auth("u", "new-key")
    )
    assert status == 200
    assert await control(http, yespo, "POST", "/key", {"key": ""}) == (
        400,
        {"message": 'the body must be {"key": "the new API key"}'},
    )


async def test_random_rate_with_a_seed_lands_near_the_rate_and_repeats(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    async def run() -> list[int]:
        await control(http, yespo, "POST", "/faults", {"status": 503, "rate": 0.3, "seed": 42})
        return [(await post(http, f"{yespo.url}/v1/event", event(i)))[0] for i in range(200)]

    first = await run()
    failed = first.count(503)
    assert 40 <= failed <= 80  # 60 expected; +-20 is over 3 standard deviations
    assert set(first) == {200, 503}
    assert len(yespo.events) == 200 - failed
    assert await run() == first


async def test_faults_combine(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    yespo.faults = Faults(delay_ms=50, status=503, rate=1.0, retry_after=1)
    started = time.monotonic()
    status, _, resp = await post(http, f"{yespo.url}/v1/event", event())
    assert (status, resp.headers["Retry-After"]) == (503, "1")
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize(
    "plan",
    [
        {"stauts": 503},
        {"status": "503"},
        {"status": 503, "rate": 1.5},
        {"rate": 0.5},
        {"drop_reply": "often"},
        {"reject_if": {"param": "a"}},
        {"reject_if": {"param": "a", "value": "b", "status": 200}},
        {"reject_if": {"param": "a", "value": "b", "whole_request": "yes"}},
        {"delay_ms": -1},
        [],
    ],
)
async def test_bad_fault_plan_is_400_and_changes_nothing(
    yespo: StandIn, http: aiohttp.ClientSession, plan: Any
) -> None:
    status, reply = await control(http, yespo, "POST", "/faults", plan)
    assert status == 400 and reply["message"]
    assert yespo.faults == Faults()
    with pytest.raises(FaultsError):
        Faults.from_json(plan)


# -- control API and in-process API -------------------------------------------------------


async def test_control_api_reads_incrementally_and_clears(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    for i in range(3):
        await post(http, f"{yespo.url}/v1/event", event(i))
    await post(http, f"{yespo.url}/v1/event", {"bad": 1})
    await post(http, f"{yespo.url}/v1/orders", {"orders": [order("1")]})

    everything = await control(http, yespo, "GET", "/events")
    assert [e["seq"] for e in everything["events"]] == [1, 2, 3]
    assert everything["events"][0]["body"] == event(0)
    assert everything["events"][0]["path"] == "/api/v1/event"
    assert everything["last_seq"] == 3
    later = await control(http, yespo, "GET", "/events?since=1&limit=1")
    assert [e["seq"] for e in later["events"]] == [2]
    orders = await control(http, yespo, "GET", "/orders")
    assert [o["body"]["externalOrderId"] for o in orders["orders"]] == ["1"]

    stats = await control(http, yespo, "GET", "/stats")
    assert stats["requests"] == {
        "/api/v1/event": {"200": 3, "400": 1},
        "/api/v1/orders": {"200": 1},
    }
    assert (stats["events"], stats["orders"]) == (3, 1)

    assert await control(http, yespo, "DELETE", "/events") == {"cleared": True}
    assert (await control(http, yespo, "GET", "/events"))["events"] == []
    assert (await control(http, yespo, "GET", "/orders"))["orders"] == []
    assert (await control(http, yespo, "GET", "/stats"))["requests"] == {}
    await post(http, f"{yespo.url}/v1/event", event(9))
    assert [r.seq for r in yespo.events] == [4]  # seq goes on, so ?since= readers keep going


async def test_fault_plan_round_trips_through_the_control_api(
    yespo: StandIn, http: aiohttp.ClientSession
) -> None:
    plan = await control(http, yespo, "POST", "/faults", {"status": 502, "rate": 0.5, "seed": 1})
    assert (plan["status"], plan["rate"], plan["seed"]) == (502, 0.5, 1)
    assert await control(http, yespo, "GET", "/faults") == plan
    healthy = await control(http, yespo, "DELETE", "/faults")
    assert healthy == Faults().to_json()
    assert yespo.faults == Faults()


async def test_records_are_bounded(http: aiohttp.ClientSession) -> None:
    async with StandIn(api_key=KEY, max_records=3) as stand_in:
        for i in range(5):
            await post(http, f"{stand_in.url}/v1/event", event(i))
        assert [r.seq for r in stand_in.events] == [3, 4, 5]
        stand_in.faults = Faults(duplicate_detection=True)
        status, _, _ = await post(http, f"{stand_in.url}/v1/event", event(0))  # evicted: new again
        assert status == 200


async def test_wait_for_events(yespo: StandIn, http: aiohttp.ClientSession) -> None:
    sender = asyncio.create_task(post(http, f"{yespo.url}/v1/event", event()))
    [recorded] = await yespo.wait_for_events(1, within_s=2)
    assert recorded.body == event()
    await sender
    with pytest.raises(TimeoutError, match="1 of 2"):
        await yespo.wait_for_events(2, within_s=0.05)


async def test_base_path_is_configurable(http: aiohttp.ClientSession) -> None:
    async with StandIn(api_key=KEY, base="/esputnik/api/") as stand_in:
        assert stand_in.url.endswith("/esputnik/api")
        status, _, _ = await post(http, f"{stand_in.url}/v1/event", event())
        assert status == 200
        assert stand_in.events[0].path == "/esputnik/api/v1/event"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_cli_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "standin", "--port", str(port), "--api-key", KEY),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/event"
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _, _ = await post(http, url, event())
                break
            except aiohttp.ClientConnectionError:
                assert proc.returncode is None, "the stand-in exited"
                assert time.monotonic() < deadline, "the stand-in did not start"
                await asyncio.sleep(0.05)
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err
        assert f"YESPO_API_URL=http://127.0.0.1:{port}/api" in err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
