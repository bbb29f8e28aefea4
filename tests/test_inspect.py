"""The live inspector's HTTP side (#17), over real HTTP: recording only with a key, the
operator key or cookie, each event's journey on the stream (received, normalized or
refused, delivered by the stand-in, dead-lettered), masking, resuming after a
reconnect, and dead letters replayed through the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from collector.inspect import Filter, Journal, Watcher
from collector.inspect import journal as journal_module
from collector.inspect.journal import FLUSH_S
from collector.normalize import Normalized, normalize_event
from collector.sources.base import rules_from
from standin import Faults, RejectIf, StandIn

from .conftest import YESPO_KEY, Running, delivering, make_settings, running

INSPECT_KEY = "inspect-secret"
OPERATOR = {"Authorization": f"Bearer {INSPECT_KEY}"}


def page_view(n: int, email: str | None = None) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": f"pv-{n}",
        "contact": {"email": email or f"visitor{n}@example.com"},
        "properties": {"location": f"https://shop.example/p/{n}"},
    }


class Stream:
    """One reader of /inspect/stream: its events as (event, id, data)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.hello: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.skipped = 0  # steps the stream left out of its live sample, as it says

    async def _next(self) -> tuple[str, str | None, Any]:
        event, event_id, data = "message", None, None
        while True:
            line = (await self.resp.content.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "":
                if data is not None:
                    return event, event_id, data
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data = orjson.loads(value)

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], within_s: float = 10
    ) -> list[dict[str, Any]]:
        async def read() -> None:
            while not done(self.steps):
                event, event_id, data = await self._next()
                if event == "hello":
                    self.hello = data
                elif event == "skipped":
                    self.skipped += data["skipped"]
                elif event == "step":
                    assert event_id == data["id"]
                    self.steps.append(data)
                    self.ids.append(event_id or "")

        await asyncio.wait_for(read(), within_s)
        return self.steps

    def of(self, journey: str) -> list[str]:
        return [s["step"] for s in self.steps if s["journey"] == journey]


@asynccontextmanager
async def stream(c: Running, query: str = "", **headers: str) -> AsyncIterator[Stream]:
    async with c.http.get(
        f"{c.url}/inspect/stream{query}", headers={**OPERATOR, **headers}
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
        s = Stream(resp)
        await s.until(lambda _: bool(s.hello))
        yield s


def has(journey: str, *steps: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda seen: all(
        any(s["journey"] == journey and s["step"] == step for s in seen) for step in steps
    )


async def test_without_a_key_the_inspector_is_not_there_and_records_nothing(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path)) as c:
        for path in ("/inspect", "/inspect/stream", "/inspect/dead"):
            async with c.http.get(c.url + path, headers=OPERATOR) as resp:
                assert resp.status == 404, path
        status, _ = await c.post("/inspect/login", {"key": INSPECT_KEY}, headers={})
        assert status == 404
        assert (await c.post("/v1/events", page_view(1)))[0] == 200
        journal = c.app.state.journal
        assert not journal.live and not journal.on
        journal.flush()
        assert await journal.backlog(None, Filter(), Watcher(Filter())) == []


async def test_the_stream_and_dead_letters_need_the_operator_key(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, inspect_key=INSPECT_KEY)) as c:
        for path in ("/inspect/stream", "/inspect/dead"):
            for headers in ({}, c.auth(), {"Authorization": "Bearer wrong"}):
                async with c.http.get(c.url + path, headers=headers) as resp:
                    assert resp.status == 401, (path, headers)
                    assert "error" in await resp.json()
        status, _ = await c.post("/inspect/dead/replay", {"all": True}, headers=c.auth())
        assert status == 401
        status, _ = await c.post("/inspect/login", {"key": "wrong"}, headers={})
        assert status == 401


async def test_login_sets_a_cookie_that_opens_the_stream_and_logout_clears_it(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path, inspect_key=INSPECT_KEY)) as c:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.post(
                c.url + "/inspect/login", data={"key": INSPECT_KEY}, allow_redirects=False
            ) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/inspect"
                cookie = resp.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
                assert "Path=/inspect" in cookie
            async with http.get(c.url + "/inspect/dead") as resp:
                assert resp.status == 200 and (await resp.json())["total"] == 0
            async with http.post(c.url + "/inspect/logout", allow_redirects=False) as resp:
                assert resp.status == 303
            async with http.get(c.url + "/inspect/dead") as resp:
                assert resp.status == 401


async def test_a_posted_event_is_received_normalized_and_delivered_on_the_stream(
    tmp_path: Path,
) -> None:
    async with StandIn(api_key=YESPO_KEY) as standin:
        settings = delivering(tmp_path, standin.url, inspect_key=INSPECT_KEY)
        async with running(settings) as c, stream(c, "?mask=0") as s:
            assert s.hello["mask"] is False
            assert (await c.post("/v1/events", page_view(1)))[0] == 200
            await s.until(has("pv-1", "received", "normalized", "delivered"))
            assert s.of("pv-1") == ["received", "normalized", "delivered"]
            received, normalized, delivered = s.steps
            assert received["source"] == "events" and received["type"] == "pageViewed"
            assert received["detail"]["body"] == page_view(1)
            assert received["keyValue"] == "visitor1@example.com"
            yespo = normalized["detail"]["yespo"]
            assert yespo["eventTypeKey"] == "pageViewed"
            assert yespo["keyValue"] == "visitor1@example.com"
            assert normalized["detail"]["endpoint"] == "event"
            assert delivered["source"] == "delivery"
            assert delivered["detail"]["status"] == 200
            assert delivered["detail"]["attempt"] == 1
            assert delivered["detail"]["ms"] >= 0
            assert standin.events[0].body["keyValue"] == "visitor1@example.com"


async def test_a_refused_event_shows_the_field_errors_its_sender_got(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, inspect_key=INSPECT_KEY)) as c:
        async with stream(c, "?step=refused") as s:
            bad = {"type": "pageViewed", "messageId": "bad-1", "contact": {"email": "nope"}}
            status, reply = await c.post("/v1/events", {"batch": [page_view(2), bad]})
            assert status == 200
            [sent] = reply["rejected"]
            [refused] = await s.until(lambda seen: bool(seen))
            assert refused["journey"] == "bad-1"
            assert refused["detail"]["errors"] == sent["errors"]
            assert refused["detail"]["status"] == 200
        # The whole journey, from the buffer, for a page opened afterwards.
        async with stream(c, "?journey=bad-1&mask=0") as s:
            await s.until(lambda seen: len(seen) == 2)
            assert s.of("bad-1") == ["received", "refused"]
            assert s.steps[0]["detail"]["body"] == bad


async def test_personal_data_is_masked_unless_the_watcher_turns_masking_off(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path, inspect_key=INSPECT_KEY)) as c:
        event = page_view(3, "alice@example.com")
        event["contact"]["phone"] = "+380501234567"
        assert (await c.post("/v1/events", event))[0] == 200
        async with stream(c) as s:
            assert s.hello["mask"] is True
            received, normalized = await s.until(lambda seen: len(seen) == 2)
        text = orjson.dumps([received, normalized]).decode()
        assert "alice@example.com" not in text and "+380501234567" not in text
        assert received["keyValue"] == "a***@example.com"
        assert received["key"] == "contact:a***@example.com"
        assert received["detail"]["body"]["contact"] == {
            "email": "a***@example.com",
            "phone": "+38050*****67",
        }
        assert normalized["detail"]["yespo"]["keyValue"] == "a***@example.com"
        async with stream(c, "?mask=0") as s:
            received, normalized = await s.until(lambda seen: len(seen) == 2)
        assert received["keyValue"] == "alice@example.com"
        assert received["detail"]["body"] == event
        # The contact filter reads the unmasked key.
        async with stream(c, "?contact=alice@") as s:
            assert len(await s.until(lambda seen: len(seen) == 2)) == 2


async def test_a_reconnecting_watcher_resumes_after_its_last_event_id(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, inspect_key=INSPECT_KEY)) as c:
        async with stream(c) as s:
            assert (await c.post("/v1/events", page_view(4)))[0] == 200
            await s.until(lambda seen: len(seen) == 2)
            last = s.ids[-1]
        assert (await c.post("/v1/events", page_view(5)))[0] == 200
        async with stream(c, **{"Last-Event-ID": last}) as s:
            await s.until(lambda seen: len(seen) == 2)
            assert (await c.post("/v1/events", page_view(6)))[0] == 200
            await s.until(lambda seen: len(seen) == 4)
        assert [x["journey"] for x in s.steps] == ["pv-5", "pv-5", "pv-6", "pv-6"]


async def test_a_dead_letter_is_listed_and_replayed_through_the_api_to_the_stand_in(
    tmp_path: Path,
) -> None:
    async with StandIn(api_key=YESPO_KEY) as standin:
        standin.faults = Faults(reject_if=RejectIf("email", "visitor7@example.com"))
        settings = delivering(tmp_path, standin.url, inspect_key=INSPECT_KEY)
        async with running(settings) as c, stream(c, "?journey=pv-7&mask=0") as s:
            assert (await c.post("/v1/events", page_view(7)))[0] == 200
            await s.until(has("pv-7", "dead"))
            dead_step = next(x for x in s.steps if x["step"] == "dead")
            assert dead_step["detail"]["reason"] == "rejected"
            assert dead_step["detail"]["status"] == 400
            assert dead_step["detail"]["answer"]

            async def listed() -> dict[str, Any]:
                async with c.http.get(c.url + "/inspect/dead?mask=0", headers=OPERATOR) as r:
                    assert r.status == 200
                    data: dict[str, Any] = await r.json()
                    return data

            for _ in range(100):  # the outcome is written to the spool a moment later
                letters = await listed()
                if letters["total"]:
                    break
                await asyncio.sleep(0.05)
            [letter] = letters["dead"]
            assert letters["total"] == 1
            assert (letter["journey"], letter["reason"], letter["status"]) == (
                "pv-7",
                "rejected",
                400,
            )
            assert letter["body"]["keyValue"] == "visitor7@example.com"

            # A form cannot act: JSON only.
            async with c.http.post(
                c.url + "/inspect/dead/replay", data={"all": "true"}, headers=OPERATOR
            ) as r:
                assert r.status == 415
            standin.faults = Faults()
            status, reply = await c.post(
                "/inspect/dead/replay", {"seqs": [letter["seq"]]}, headers=OPERATOR
            )
            assert (status, reply) == (200, {"replayed": 1})
            await standin.wait_for_events(1)
            await s.until(has("pv-7", "replayed", "delivered"))
            assert s.of("pv-7")[-2:] == ["replayed", "delivered"]
            assert standin.events[-1].body["keyValue"] == "visitor7@example.com"
            assert (await listed())["total"] == 0


async def test_purge_through_the_api_deletes_dead_letters(tmp_path: Path) -> None:
    async with StandIn(api_key=YESPO_KEY) as standin:
        standin.faults = Faults(status=400)
        settings = delivering(tmp_path, standin.url, inspect_key=INSPECT_KEY)
        async with running(settings) as c:
            assert (await c.post("/v1/events", {"batch": [page_view(8), page_view(9)]}))[0] == 200
            for _ in range(200):
                if (await c.app.state.spool.stats()).dead == 2:
                    break
                await asyncio.sleep(0.05)
            status, reply = await c.post("/inspect/dead/purge", {"bogus": 1}, headers=OPERATOR)
            assert status == 400
            status, reply = await c.post(
                "/inspect/dead/purge", {"reason": "rejected"}, headers=OPERATOR
            )
            assert (status, reply) == (200, {"purged": 2})
            assert (await c.app.state.spool.stats()).dead == 0


async def test_a_browser_visitors_events_are_held_released_and_delivered(tmp_path: Path) -> None:
    shop = "https://shop.example"
    async with StandIn(api_key=YESPO_KEY) as standin:
        settings = delivering(
            tmp_path, standin.url, inspect_key=INSPECT_KEY, site_keys={"site-1": (shop,)}
        )
        async with running(settings) as c, stream(c, "?source=browser,delivery&mask=0") as s:

            async def browse(event: dict[str, Any]) -> None:
                body = {"siteKey": "site-1", "anonymousId": "visitor-0001", "batch": [event]}
                headers = {"Content-Type": "text/plain", "Origin": shop}
                async with c.http.post(
                    c.url + "/lib/y", data=orjson.dumps(body), headers=headers
                ) as resp:
                    assert resp.status == 200, await resp.text()

            view = {"type": "pageViewed", "messageId": "b-1",
                    "properties": {"location": shop + "/p/1"}}  # fmt: skip
            await browse(view)
            await s.until(has("b-1", "received", "held"))
            held = next(x for x in s.steps if x["step"] == "held")
            assert held["detail"]["visitor"] == "visitor:visitor-0001"
            await browse({"type": "identify", "messageId": "i-1", "contact": {"email": "jo@x.io"}})
            await s.until(has("b-1", "released", "normalized", "delivered"))
            assert s.of("b-1") == ["received", "held", "released", "normalized", "delivered"]
            released = next(x for x in s.steps if x["step"] == "released")
            assert released["detail"]["contact"] == {"email": "jo@x.io"}
            assert released["keyValue"] == "jo@x.io"
            assert standin.events[0].body["keyValue"] == "jo@x.io"


async def test_segment_calls_are_received_normalized_or_refused_without_the_write_key(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, inspect_key=INSPECT_KEY, segment_write_keys=("wk-1",))
    async with running(settings) as c, stream(c, "?source=segment&mask=0") as s:
        good = {"type": "track", "event": "Product Viewed", "messageId": "sg-1",
                "userId": "u1", "properties": {"product_id": "p1", "price": 3}}  # fmt: skip
        bad = {"type": "track", "event": "Product Viewed", "messageId": "sg-2", "userId": "u1",
               "properties": {}}  # fmt: skip
        body = {"writeKey": "wk-1", "batch": [good, bad]}
        async with c.http.post(c.url + "/v1/batch", json=body) as resp:
            assert resp.status == 200
        await s.until(lambda seen: has("sg-1", "held")(seen) and has("sg-2", "refused")(seen))
        assert s.of("sg-1") == ["received", "held"]  # a userId alone: held until identify
        assert s.of("sg-2") == ["received", "refused"]
        assert "wk-1" not in orjson.dumps(s.steps).decode()
        refused = next(x for x in s.steps if x["step"] == "refused")
        assert refused["journey"] == "sg-2" and refused["detail"]["errors"]


async def test_a_firehose_is_sampled_by_whole_journeys_and_says_what_it_left_out(
    tmp_path: Path,
) -> None:
    # Past LIVE_STEPS_PER_S a watcher gets whole journeys of a share of the events, and
    # the count of the steps it was not sent: a page cannot show more, and rendering
    # every step of a busy shop cost ingest 41%.
    settings = make_settings(tmp_path, inspect_key=INSPECT_KEY, max_batch_events=1000)
    async with running(settings) as c, stream(c) as s:
        events = [page_view(n) for n in range(3000)]
        for start in range(0, 3000, 1000):
            assert (await c.post("/v1/events", {"batch": events[start : start + 1000]}))[0] == 200
        await s.until(lambda seen: len(seen) + s.skipped >= 6000, within_s=30)
        assert len(s.steps) + s.skipped == 6000
        assert s.skipped > 0 and len(s.steps) < 6000
        shown = {step["journey"] for step in s.steps}
        assert all(sorted(s.of(j)) == ["normalized", "received"] for j in shown)


async def test_past_its_share_a_busy_collector_records_only_what_a_watcher_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A watcher's share made small (20 steps a second, bursts of 40) so that 200 events
    # are a firehose: the unfiltered watcher is told of every step left out, while the
    # one filtering for a contact, and refused events, miss nothing.
    monkeypatch.setattr(journal_module, "LIVE_STEPS_PER_S", 20)
    async with (
        running(make_settings(tmp_path, inspect_key=INSPECT_KEY, inspect_buffer=0)) as c,
        stream(c) as everything,
        stream(c, "?contact=wanted@example.com") as named,
    ):
        for start in range(0, 200, 10):  # over several windows of FLUSH_S
            batch = [
                page_view(n, "wanted@example.com" if n % 10 == 3 else None)
                for n in range(start, start + 10)
            ]
            assert (await c.post("/v1/events", {"batch": batch}))[0] == 200
            await asyncio.sleep(0.02)
        bad = {"type": "pageViewed", "messageId": "bad-9", "contact": {"email": "nope"}}
        assert (await c.post("/v1/events", bad))[0] == 400
        await named.until(lambda seen: len(seen) == 40, within_s=10)
        wanted = {f"pv-{n}" for n in range(3, 200, 10)}
        assert {s["journey"] for s in named.steps} == wanted
        assert all(sorted(named.of(j)) == ["normalized", "received"] for j in wanted)
        await everything.until(has("bad-9", "received", "refused"))
        await everything.until(lambda seen: len(seen) + everything.skipped >= 402)
        await asyncio.sleep(2 * FLUSH_S)
        await everything.until(lambda seen: True, within_s=1)
        assert len(everything.steps) + everything.skipped == 402
        assert everything.skipped > 0
        shown = {step["journey"] for step in everything.steps}
        whole = (["normalized", "received"], ["received", "refused"])
        assert all(sorted(everything.of(j)) in whole for j in shown)


async def test_without_a_watcher_past_its_share_sources_check_one_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A buffer of 20 steps: its share is a burst of 20 steps, then 20 a QUIET_SPAN_S. Past
    # it `on` is False (a source checks that and records nothing) until the next window.
    # The windows are the test's: the flush task waits an hour.
    monkeypatch.setattr(journal_module, "FLUSH_S", 3600.0)
    settings = make_settings(tmp_path, inspect_key=INSPECT_KEY, inspect_buffer=20)
    async with running(settings) as c:
        journal = c.app.state.journal

        async def buffered() -> list[str]:
            journal.flush()
            steps = await journal.backlog(None, Filter(), Watcher(Filter()))
            return [f"{x['journey']} {x['step']}" for x in steps]

        events = [page_view(n) for n in range(101)]
        assert (await c.post("/v1/events", {"batch": events[:10]}))[0] == 200
        assert journal.live and not journal.on  # 20 steps: the share is used up
        for event in events[10:100]:
            assert (await c.post("/v1/events", event))[0] == 200
        whole = [f"pv-{n} {step}" for n in range(10) for step in ("received", "normalized")]
        assert await buffered() == whole
        journal.resample()  # the next window: its share refilled
        assert journal.on
        assert (await c.post("/v1/events", events[100]))[0] == 200
        # (At most 20 steps, a request's together: the batch's made room.)
        assert await buffered() == ["pv-100 received", "pv-100 normalized"]


def test_a_filter_passes_the_heads_of_an_event_as_it_passes_its_steps() -> None:
    journal = Journal(True, buffer=100)
    events = [page_view(1, "a@example.com"), page_view(2, "b@example.com")]
    filters = [
        Filter(), Filter(journey="pv-1"), Filter(contact="a@ex"), Filter(contact="zzz"),
        Filter(types=frozenset({"pageViewed"})), Filter(types=frozenset({"orderCreated"})),
        Filter(sources=frozenset({"events"})), Filter(sources=frozenset({"segment"})),
        Filter(steps=frozenset({"normalized"})), Filter(steps=frozenset({"delivered"})),
        Filter(order="o-1"),
    ]  # fmt: skip
    rules = rules_from(make_settings(Path("unused")))
    outs = [normalize_event(e, rules, lambda: "id") for e in events]
    assert all(type(o) is Normalized for o in outs)
    journal.ingest("events", orjson.dumps({"batch": events}), outs, 200)
    journal.flush()
    steps = journal.expand(journal._ring[0])
    for keep in filters:
        for o in outs:
            assert isinstance(o, Normalized)
            passed = any(keep(s) for s in steps if s["journey"] == o.message_id)
            heads = keep.heads(
                o.message_id, "events", o.event_type, o.key, o.after, ("received", "normalized")
            )
            assert heads == passed, (keep, o.message_id)


async def test_a_page_opened_later_gets_from_the_buffer_the_steps_a_watcher_saw_live(
    tmp_path: Path,
) -> None:
    # The buffer keeps its records packed into bytes: what it gives back is what they were.
    async with running(make_settings(tmp_path, inspect_key=INSPECT_KEY)) as c:
        async with stream(c, "?mask=0") as live:
            bad = {"type": "pageViewed", "messageId": "bad-2", "contact": {"email": "nope"},
                   "properties": {"note": "ünïcödé ✓"}}  # fmt: skip
            batch = [page_view(1), bad, {**page_view(2), "properties": {"big": "x" * 5000}}]
            assert (await c.post("/v1/events", {"batch": batch}))[0] == 200
            assert (await c.post("/v1/events", page_view(3)))[0] == 200
            await live.until(lambda seen: len(seen) == 8)
        async with stream(c, "?mask=0") as later:
            await later.until(lambda seen: len(seen) == 8)
        assert later.steps == live.steps
        assert later.of("bad-2") == ["received", "refused"]
        assert later.steps[2]["detail"]["body"] == bad


async def test_past_its_share_a_recorded_journey_keeps_its_delivery_and_no_other_gets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "LIVE_STEPS_PER_S", 20)
    async with StandIn(api_key=YESPO_KEY) as standin:
        settings = delivering(tmp_path, standin.url, inspect_key=INSPECT_KEY, inspect_buffer=0)
        async with running(settings) as c, stream(c) as s:
            for start in range(0, 100, 10):
                batch = [page_view(n) for n in range(start, start + 10)]
                assert (await c.post("/v1/events", {"batch": batch}))[0] == 200
            for _ in range(100):
                if len(standin.events) == 100:
                    break
                await asyncio.sleep(0.1)
            assert len(standin.events) == 100

            def journeys(step: str) -> set[str]:
                return {x["journey"] for x in s.steps if x["step"] == step}

            await s.until(lambda _: bool(journeys("received")) and s.skipped >= 100)
            await s.until(lambda _: journeys("received") <= journeys("delivered"))
            await asyncio.sleep(3 * FLUSH_S)  # a delivered step of any other would be here
            with contextlib.suppress(TimeoutError):
                await s.until(lambda _: False, within_s=0.5)
        assert 0 < len(journeys("received")) < 100
        assert journeys("delivered") == journeys("received")
