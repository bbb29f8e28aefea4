"""Operator commands against a Redis spool that a collector filled: `collector spool`
works from any collector on the same Redis."""

from __future__ import annotations

import asyncio

from collector.spool.redis import RedisSpool

from .redis_server import RedisServer
from .spool.conftest import T0, Entry
from .test_cli_spool import run


def fill(url: str) -> None:
    async def go() -> None:
        s = RedisSpool(url, max_events=100, dedup_window_ms=60_000)
        await s.open()
        await s.append(
            [Entry("a1", key="A"), Entry("b1", key="B", event_type="orderCreated"),
             Entry("c1", key="C")],
            T0,
        )  # fmt: skip
        leased = {r.message_id: r.seq for r in await s.lease(10, 1, T0)}
        await s.dead_letter([leased["a1"]], "rejected", 400, "bad param page", T0)
        await s.dead_letter([leased["b1"]], "expired", 503, "gave up", T0)
        await s.close()

    asyncio.run(go())


def test_status_dead_replay_and_purge_read_the_shared_redis_spool(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    url = redis_server.url
    fill(url)
    out = run("spool", "status", "--spool-url", url)
    assert "waiting:      1" in out
    assert "dead letters: 2" in out and "rejected: 1" in out and "expired: 1" in out
    out = run("spool", "dead", "--spool-url", url, "--type", "orderCreated")
    assert "b1" in out and "a1" not in out
    assert "requeued 1" in run("spool", "replay", "--spool-url", url, "--reason", "rejected")
    assert "waiting:      2" in run("spool", "status", "--spool-url", url)
    assert "deleted 1" in run("spool", "purge", "--spool-url", url, "--all", "--yes")
    assert "dead letters: 0" in run("spool", "status", "--spool-url", url)
