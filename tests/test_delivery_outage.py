"""End to end, collector and stand-in over real HTTP: the circuit breaker while Yespo is
down, and what must not trip it (429, 401, one event's own 5xx)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.spool import Record
from standin import Faults, RejectIf, StandIn

from .conftest import Running
from .test_delivery import (
    eventually,
    forwarder,
    key_values,
    order_event,
    page_view,
    pipeline,
    send,
    spool,
)

BREAKER_LOG = "collector.forward"


def requests(standin: StandIn, status: str) -> int:
    return sum(by.get(status, 0) for by in standin.stats()["requests"].values())


async def readyz(c: Running) -> dict[str, Any]:
    async with c.http.get(c.url + "/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def gauge(c: Running, name: str) -> float:
    async with c.http.get(c.url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def watch(standin: StandIn, status: str, count: int, within_s: float = 20) -> int:
    """Wait until the stand-in has answered `count` requests with `status` (or held them:
    "hung"); return the most requests it held unanswered at once meanwhile."""
    most = 0
    for _ in range(int(within_s * 100)):
        if requests(standin, status) >= count:
            return most
        most = max(most, standin.held)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stand-in did not answer {count} requests {status} in time")


def breaker_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "breaker" in r.getMessage()]


async def _open(c: Running) -> bool:
    return forwarder(c).breaker_open


async def waiting(c: Running) -> list[Record]:
    return await spool(c).pending(10_000)


async def test_a_full_outage_opens_the_breaker_stops_sending_then_delivers_all_once_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=BREAKER_LOG)
    async with pipeline(tmp_path) as (c, standin):
        standin.faults = Faults(status=503)
        stages = ["orderCreated", "orderUpdated", "orderDelivered"]
        for stage in stages:  # each stage a request of its own, all orders interleaved
            await send(c, [order_event(stage, n) for n in range(40)])
        await send(c, [page_view(n) for n in range(300)])
        await eventually(lambda: _open(c))
        ready = await readyz(c)
        assert ready["forwarder"].startswith("breaker open") and "503" in ready["forwarder"]
        assert await gauge(c, "delivery_breaker_open") == 1

        before = requests(standin, "503")
        await asyncio.sleep(2)  # without the breaker: 340 keys retried every 50 ms to 1 s
        during = requests(standin, "503") - before
        # Probes only: one at a time, at least 100 ms apart in this test's schedule.
        assert during <= 20, during
        # Entries that only waited were never tried: no attempts burnt by the outage.
        untried = [r for r in await waiting(c) if r.attempts == 0]
        assert len(untried) >= 420 - 32 - requests(standin, "503"), len(untried)

        standin.faults = Faults()
        await standin.wait_for_events(420, within_s=20)
        await eventually(lambda: _depth_is_0(c))
        assert not forwarder(c).breaker_open
        assert (await readyz(c))["forwarder"] == "running"
        assert await gauge(c, "delivery_breaker_open") == 0
        assert (await spool(c).stats()).dead == 0
    counts = key_values(standin)
    assert sum(counts.values()) == 420
    assert all(counts[f"visitor{n}@example.com"] == 1 for n in range(300))
    seen: dict[str, list[str]] = {}
    for r in standin.events:
        body = orjson.loads(r.raw)
        order = [p["value"] for p in body["params"] if p["name"] == "externalOrderId"]
        if order:
            seen.setdefault(order[0], []).append(body["eventTypeKey"])
    assert len(seen) == 40 and all(arrivals == stages for arrivals in seen.values()), seen
    # One line when it opened and one when it closed, not one per failure.
    lines = breaker_lines(caplog)
    assert len(lines) == 2 and "breaker open" in lines[0] and "breaker closed" in lines[1], lines


async def _depth_is_0(c: Running) -> bool:
    return await _depth_is(c, 0)


async def _depth_is(c: Running, depth: int) -> bool:
    return (await spool(c).stats()).depth == depth


async def test_while_yespo_hangs_one_probe_at_a_time(tmp_path: Path) -> None:
    async with pipeline(tmp_path, yespo_timeout_s=0.5) as (c, standin):
        standin.faults = Faults(hang=True)
        await send(c, [page_view(n) for n in range(100)])
        await eventually(lambda: _open(c))
        # Sends that were on their way when it opened end first; then the probes go.
        start = requests(standin, "hung") + 1
        await watch(standin, "hung", start)
        # four more probes, each held until the collector's timeout
        assert await watch(standin, "hung", start + 4) == 1
        assert forwarder(c).breaker_open


async def test_a_429_storm_does_not_open_the_breaker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=BREAKER_LOG)
    async with pipeline(tmp_path) as (c, standin):
        standin.faults = Faults(status=429, retry_after=0)
        await send(c, [page_view(n) for n in range(100)])
        # Yespo asks every key, again and again, to slow down: each entry honours it and
        # retries; delivery as a whole goes on.
        await watch(standin, "429", 400)
        assert await gauge(c, "delivery_breaker_open") == 0
        assert (await readyz(c))["forwarder"] == "running"
        standin.faults = Faults()
        await standin.wait_for_events(100, within_s=15)
    assert breaker_lines(caplog) == []


async def test_a_refused_key_pauses_delivery_and_does_not_open_the_breaker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=BREAKER_LOG)
    async with pipeline(tmp_path) as (c, standin):
        standin.api_key = "rotated"
        await send(c, [page_view(n) for n in range(100)])
        await eventually(lambda: _paused(c))
        await watch(standin, "401", requests(standin, "401") + 3)  # probes, on schedule
        assert (await gauge(c, "forwarder_paused"), await gauge(c, "delivery_breaker_open")) == (
            1, 0
        )  # fmt: skip
        assert (await readyz(c))["forwarder"].startswith("paused: Yespo answered HTTP 401")
        assert breaker_lines(caplog) == []
        standin.api_key = "yespo-key"
        await standin.wait_for_events(100, within_s=15)


async def _paused(c: Running) -> bool:
    return forwarder(c).paused


async def test_one_events_repeated_5xx_among_healthy_others_stops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=BREAKER_LOG)
    async with pipeline(tmp_path) as (c, standin):
        forwarder(c).breaker.open_after = 4  # so that a few of its failures would be enough
        standin.faults = Faults(reject_if=RejectIf("email", "visitor0@example.com", status=500))
        bad = [page_view(0) | {"messageId": f"bad-{n}"} for n in range(3)]
        await send(c, bad + [page_view(n) for n in range(1, 201)])
        await standin.wait_for_events(200, within_s=15)
        # Now the bad event fails on its own, again and again, nothing else being sent...
        await watch(standin, "500", requests(standin, "500") + 6)
        # ...and that is its key's problem: the others still go at once.
        await send(c, [page_view(n) for n in range(201, 251)])
        await standin.wait_for_events(250, within_s=15)
        await eventually(lambda: _depth_is(c, 3))
        assert not forwarder(c).breaker_open
        assert [r.message_id for r in await waiting(c)] == ["bad-0", "bad-1", "bad-2"]
    assert breaker_lines(caplog) == []
    assert Counter(key_values(standin).values()) == Counter({1: 250})


async def test_an_entry_whose_age_runs_out_during_an_outage_expires_instead_of_going(
    tmp_path: Path,
) -> None:
    async with pipeline(tmp_path, max_event_age_s=1) as (c, standin):
        standin.faults = Faults(status=503)
        await send(c, [page_view(n) for n in range(100)])
        await eventually(lambda: _open(c))
        await asyncio.sleep(1.5)  # past every entry's maximum age, the breaker open
        standin.faults = Faults()
        await eventually(lambda: _depth_is_0(c))
        dead = await spool(c).dead_letters(1000)
        assert len(dead) == 100 and {d.reason for d in dead} == {"expired"}
        assert standin.events == []
        untried = [d for d in dead if d.record.attempts == 0]
        assert untried and all("COLLECTOR_MAX_EVENT_AGE" in d.detail for d in untried)
