"""Several collectors on one Redis (#17): the steps of every collector reach the watchers
of each, through the spool's shared stream, not by asking each collector."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from .conftest import Running, make_settings, running
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
        assert not b.app.state.journal.on
        async with stream(a, "?journey=pv-5") as s:
            for _ in range(100):  # until B hears that A watches (its check is every second)
                if b.app.state.journal.on:
                    break
                await asyncio.sleep(0.1)
            assert b.app.state.journal.on
            assert (await b.post("/v1/events", page_view(5)))[0] == 200
            await s.until(has("pv-5", "received", "normalized"))
