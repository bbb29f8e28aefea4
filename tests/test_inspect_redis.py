"""Several collectors on one Redis (#17): the steps of every collector reach the watchers
of each, through the spool's shared stream, not by asking each collector."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from collector.inspect import journal as journal_module
from collector.inspect.journal import FLUSH_S
from standin import StandIn

from .conftest import ROOT, YESPO_KEY, Running, make_settings, running
from .redis_server import RedisServer
from .test_inspect import INSPECT_KEY, has, page_view, stream


async def two_collectors(
    stack: AsyncExitStack, tmp_path: Path, redis_server: RedisServer, **overrides: Any
) -> list[Running]:
    """Collectors a and b on one Redis, the inspector on."""
    return [
        await stack.enter_async_context(
            running(
                make_settings(
                    tmp_path / name,
                    spool_url=redis_server.url,
                    inspect_key=INSPECT_KEY,
                    **overrides,
                )
            )
        )
        for name in ("a", "b")
    ]


async def test_a_step_recorded_on_one_collector_shows_on_the_others_stream(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    async with AsyncExitStack() as stack:
        a, b = await two_collectors(stack, tmp_path, redis_server)
        b.app.state.journal.name = "collector-b"  # both run in this test's process
        assert (await b.post("/v1/events", page_view(1)))[0] == 200  # before A watches
        async with stream(a, "?mask=0") as s:
            await s.until(has("pv-1", "received", "normalized"))  # from the shared buffer
            assert (await b.post("/v1/events", page_view(2)))[0] == 200  # while it watches
            await s.until(has("pv-2", "received", "normalized"))
            assert {x["collector"] for x in s.steps} == {"collector-b"}
            assert s.of("pv-1") == ["received", "normalized"]
            assert s.of("pv-2") == ["received", "normalized"]
            last = s.ids[-1]
        # Resuming after the last id: only what came since, from either collector.
        assert (await a.post("/v1/events", page_view(3)))[0] == 200
        async with stream(a, **{"Last-Event-ID": last}) as s:
            await s.until(has("pv-3", "received", "normalized"))
            assert [x["journey"] for x in s.steps] == ["pv-3", "pv-3"]


async def test_with_no_buffer_a_collector_records_while_another_has_watchers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    async with AsyncExitStack() as stack:
        a, b = await two_collectors(stack, tmp_path, redis_server, inspect_buffer=0)
        b.app.state.journal.name = "collector-b"  # both run in this test's process
        assert not b.app.state.journal.live
        async with stream(a, "?journey=pv-5") as s:
            for _ in range(100):  # until B hears that A watches (its check is every second)
                if b.app.state.journal.live:
                    break
                await asyncio.sleep(0.1)
            assert b.app.state.journal.live
            assert (await b.post("/v1/events", page_view(5)))[0] == 200
            await s.until(has("pv-5", "received", "normalized"))


async def test_a_filtered_page_gets_what_it_names_from_a_busy_collector_past_its_share(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B's share made small (20 steps a second): past it B records only what a watcher
    # names, and the watcher filtering for one contact is on A, so B learns its filter
    # through Redis.
    monkeypatch.setattr(journal_module, "LIVE_STEPS_PER_S", 20)
    redis_server.flush()
    async with AsyncExitStack() as stack:
        a, b = await two_collectors(stack, tmp_path, redis_server)
        b.app.state.journal.name = "collector-b"  # both run in this test's process
        async with stream(a, "?contact=wanted@example.com") as s:
            for _ in range(50):  # until B hears what A's watcher wants (every second)
                if b.app.state.journal._targets:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2 * FLUSH_S)  # and takes a watcher's share
            for start in range(0, 200, 10):
                batch = [
                    page_view(n, "wanted@example.com" if n % 10 == 3 else None)
                    for n in range(start, start + 10)
                ]
                assert (await b.post("/v1/events", {"batch": batch}))[0] == 200
            await s.until(lambda seen: len(seen) == 40, within_s=10)
            wanted = {f"pv-{n}" for n in range(3, 200, 10)}
            assert {x["journey"] for x in s.steps} == wanted
            assert {x["collector"] for x in s.steps} == {"collector-b"}
        steps = await a.app.state.journal.shared.backlog(None, 0, 10_000)
        assert len(steps) < 400  # B's share left most of the others out


async def test_collector_forward_on_its_own_sends_its_deliveries_steps_to_the_page(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # `collector serve --no-forward` takes events in and shows the page; `collector
    # forward` delivers them: its `delivered` steps reach the page through Redis.
    redis_server.flush()
    async with StandIn(api_key=YESPO_KEY) as standin, AsyncExitStack() as stack:
        settings = make_settings(tmp_path, spool_url=redis_server.url, inspect_key=INSPECT_KEY)
        a = await stack.enter_async_context(running(settings))
        env = {
            **os.environ,
            "COLLECTOR_SPOOL_URL": redis_server.url,
            "COLLECTOR_INSPECT_KEY": INSPECT_KEY,
            "YESPO_API_URL": standin.url,
            "YESPO_API_KEY": YESPO_KEY,
            "YESPO_MAX_RPS": "0",
        }
        log = (tmp_path / "forward.log").open("wb")
        stack.callback(log.close)
        forward = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "forward",
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.push_async_callback(asyncio.wait_for, forward.wait(), 10)
        stack.callback(forward.terminate)
        async with stream(a) as s:
            assert (await a.post("/v1/events", page_view(7)))[0] == 200
            await s.until(has("pv-7", "received", "normalized", "delivered"), within_s=20)
            [delivered] = [x for x in s.steps if x["step"] == "delivered"]
            assert delivered["collector"].endswith(f":{forward.pid}")
            assert delivered["detail"]["status"] == 200
        assert [e.body["keyValue"] for e in standin.events] == ["visitor7@example.com"]
