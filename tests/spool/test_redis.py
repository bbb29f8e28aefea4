"""The Redis spool across collectors: several spool objects on one redis-server share one
queue, as several collector processes do (each test gets an emptied server)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis

from collector.config import Settings
from collector.delivery.service import make_forwarder
from collector.errors import ConfigError, SpoolFull
from collector.metrics import Metrics
from collector.spool import Rejected, open_spool
from collector.spool.redis import RedisSpool

from ..redis_server import RedisServer
from .conftest import T0, WINDOW_MS, Entry


@pytest.fixture
async def server(redis_server: RedisServer) -> RedisServer:
    redis_server.flush()
    return redis_server


@pytest.fixture
async def three(server: RedisServer) -> AsyncIterator[list[RedisSpool]]:
    """Three collectors' spools on one Redis."""
    async with AsyncExitStack() as stack:
        spools = []
        for _ in range(3):
            s = RedisSpool(server.url, max_events=1000, dedup_window_ms=WINDOW_MS)
            await s.open()
            stack.push_async_callback(s.close)
            spools.append(s)
        yield spools


def test_redis_urls_pick_the_redis_backend() -> None:
    for url in ("redis://:secret@127.0.0.1:6379/2", "rediss://cache.example:6380/0"):
        spool = open_spool(Settings(spool_url=url))
        assert isinstance(spool, RedisSpool) and spool.url == url


async def test_start_up_reads_what_a_2xx_means_from_the_servers_persistence(
    three: list[RedisSpool],
) -> None:
    assert three[0].durability == "appendonly yes, appendfsync always"


async def test_an_entry_is_leased_by_one_collector_at_a_time_and_keys_keep_order(
    three: list[RedisSpool],
) -> None:
    a, b, c = three
    await a.append([Entry("k1", key="K")], T0)
    await b.append([Entry("k2", key="K"), Entry("l1", key="L")], T0)
    await c.append([Entry("k3", key="K")], T0)
    [k1, l1] = await a.lease(10, 30_000, T0)
    assert (k1.message_id, l1.message_id) == ("k1", "l1")
    assert await b.lease(10, 30_000, T0) == []  # K's head is A's; K's next waits for it
    await a.ack([k1.seq])
    [k2] = await b.lease(10, 30_000, T0)
    assert await c.lease(10, 30_000, T0) == []
    await b.ack([k2.seq])
    assert [r.message_id for r in await c.lease(10, 30_000, T0)] == ["k3"]


async def test_many_collectors_leasing_at_once_deliver_each_key_in_order_once(
    three: list[RedisSpool],
) -> None:
    keys = [f"contact:{i}" for i in range(20)]
    for n in range(10):  # 10 entries per key, appended through every collector in turn
        await three[n % 3].append([Entry(f"{k}#{n}", key=k) for k in keys], T0 + n)
    delivered: list[str] = []
    rng = random.Random(13)

    async def forward(spool: RedisSpool) -> None:
        while True:
            got = await spool.lease(rng.randint(1, 7), 30_000, T0 + 100)
            if not got:
                if (await spool.stats()).depth == 0:
                    return
                await asyncio.sleep(0)
                continue
            delivered.extend(r.message_id for r in got)
            await asyncio.sleep(0)
            await spool.ack([r.seq for r in got])

    await asyncio.gather(*(forward(s) for s in three))
    assert sorted(delivered) == sorted(f"{k}#{n}" for k in keys for n in range(10))  # once each
    for k in keys:
        assert [m for m in delivered if m.startswith(k + "#")] == [f"{k}#{n}" for n in range(10)]


async def test_a_dead_collectors_leases_go_to_the_others_when_they_run_out(
    three: list[RedisSpool],
) -> None:
    a, b, _ = three
    await a.append([Entry("a1", key="A"), Entry("a2", key="A")], T0)
    [a1] = await a.lease(10, 30_000, T0)
    await a.close()  # A dies with a1 leased
    # B starts: its reset ends only its own leases, never a live collector's.
    assert await b.reset_leases() == 0
    assert await b.lease(10, 30_000, T0 + 29_999) == []
    [again] = await b.lease(10, 30_000, T0 + 30_000)
    assert again.message_id == "a1" and again.seq == a1.seq


async def test_dedup_window_is_shared(three: list[RedisSpool]) -> None:
    a, b, c = three
    assert await a.append([Entry("m1")], T0) == [True]
    assert await b.append([Entry("m1"), Entry("m2")], T0 + 1) == [False, True]
    assert await c.hold([Entry("m2", key="visitor:v")], T0 + 2, per_visitor=10) == ([False], 0)


async def test_visitor_held_on_one_collector_is_released_by_another_in_order(
    three: list[RedisSpool],
) -> None:
    a, b, c = three
    await a.hold([Entry("v1", key="visitor:v"), Entry("v2", key="visitor:v")], T0, 10)
    held = await b.held("visitor:v")
    assert [r.message_id for r in held] == ["v1", "v2"]
    await b.identify(
        "visitor:v", b'{"email":"a@x"}', T0 + 5, release=[r.seq for r in held],
        entries=[Entry("v1"), Entry("v2")],
    )  # fmt: skip
    assert await c.contact_of("visitor:v", T0) == b'{"email":"a@x"}'
    assert await a.held("visitor:v") == []
    [first] = await c.lease(10, 30_000, T0 + 5)
    assert first.message_id == "v1"
    await c.ack([first.seq])
    assert [r.message_id for r in await a.lease(10, 30_000, T0 + 5)] == ["v2"]


async def test_dead_letters_are_shared(three: list[RedisSpool]) -> None:
    a, b, c = three
    await a.append([Entry("a1", key="A"), Entry("b1", key="B")], T0)
    leased = await a.lease(10, 30_000, T0)
    await a.dead_letter([r.seq for r in leased], "rejected", 400, "bad", T0)
    assert await b.dead_counts() == {"rejected": 2}
    assert [d.record.message_id for d in await c.dead_letters(10)] == ["a1", "b1"]
    assert await b.replay(seqs=[leased[0].seq]) == 1
    assert await c.purge() == 1
    assert [r.message_id for r in await a.pending(10)] == ["a1"]
    assert (await a.stats()).dead == 0


async def test_the_bound_is_the_queues_not_each_collectors(server: RedisServer) -> None:
    a = RedisSpool(server.url, max_events=3, dedup_window_ms=WINDOW_MS)
    b = RedisSpool(server.url, max_events=3, dedup_window_ms=WINDOW_MS)
    await a.open()
    await b.open()
    try:
        await a.append([Entry("m1"), Entry("m2")], T0)
        with pytest.raises(SpoolFull):
            await b.append([Entry("m3"), Entry("m4")], T0)
        assert await b.append([Entry("m3")], T0) == [True]
    finally:
        await a.close()
        await b.close()


async def test_a_visitors_lock_excludes_the_other_collectors(three: list[RedisSpool]) -> None:
    a, b, _ = three
    order: list[str] = []
    a_in = asyncio.Event()
    let_go = asyncio.Event()

    async def on_a() -> None:
        async with a.visitor_lock("visitor:v"):
            order.append("a in")
            a_in.set()
            await let_go.wait()
            order.append("a out")

    async def on_b() -> None:
        await a_in.wait()
        async with b.visitor_lock("visitor:v"):
            order.append("b in")

    async def other_on_b() -> None:
        await a_in.wait()
        async with b.visitor_lock("visitor:w"):
            order.append("other visitor")

    tasks = [asyncio.create_task(f()) for f in (on_a, on_b)]
    await a_in.wait()
    await other_on_b()  # another visitor is not held back
    for _ in range(5):
        await asyncio.sleep(0.01)  # B polls the lock meanwhile, and keeps waiting
    assert order == ["a in", "other visitor"]
    let_go.set()
    await asyncio.gather(*tasks)
    assert order == ["a in", "other visitor", "a out", "b in"]


async def test_a_request_costs_one_round_trip_whatever_its_batch(
    three: list[RedisSpool], server: RedisServer
) -> None:
    spool = three[0]
    admin = aioredis.Redis.from_url(server.url)

    async def calls() -> dict[str, int]:
        stats = await admin.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    try:
        for size in (1, 100):
            await admin.config_resetstat()
            await spool.append([Entry(f"s{size}-{i}", key=f"k{i}") for i in range(size)], T0)
            leased = await spool.lease(size, 30_000, T0)
            await spool.ack([r.seq for r in leased])
            got = await calls()
            # Three requests, three scripts; what they do inside is counted apart.
            assert got["evalsha"] == 3, (size, got)
            assert {"eval", "multi", "exec"}.isdisjoint(got)
    finally:
        await admin.aclose()


def test_a_dead_collectors_leases_last_COLLECTOR_LEASE_seconds() -> None:
    assert Settings().lease_s == 30  # the bound on a take-over: 30 s at most
    settings = Settings.from_env({"COLLECTOR_LEASE": "12", "YESPO_TIMEOUT": "5"})
    spool = open_spool(Settings(spool_url="memory://"))
    assert make_forwarder(settings, spool, Metrics()).lease_ms == 12_000
    with pytest.raises(ConfigError, match=r"COLLECTOR_LEASE .* twice YESPO_TIMEOUT"):
        Settings.from_env({"COLLECTOR_LEASE": "12", "YESPO_TIMEOUT": "10"})


async def test_carts_and_rejected_calls_are_shared(three: list[RedisSpool]) -> None:
    a, b, _ = three
    await a.save_carts({"cart:x": b'{"products":[1]}'}, T0)
    assert await b.cart("cart:x") == b'{"products":[1]}'
    await a.keep_rejected([Rejected("segment", "no_url", "why", "m1", b"{}", T0)], keep=10)
    assert await b.rejected_counts() == {"no_url": 1}
    assert await b.purge_rejected() == 1


async def test_concurrent_appends_all_land_when_redis_lost_its_scripts(
    three: list[RedisSpool], server: RedisServer
) -> None:
    # Appends go in groups, several on their way at once. Redis forgetting its scripts (a
    # restart, SCRIPT FLUSH) between two groups must cost no caller its answer or entry.
    spool = three[0]
    admin = aioredis.Redis.from_url(server.url)
    try:
        await spool.append([Entry("warm", key="w")], T0)
        await admin.script_flush()
        batches = [[Entry(f"m{b}-{i}", key=f"k{i % 7}") for i in range(20)] for b in range(30)]
        stored = await asyncio.gather(*(spool.append(batch, T0) for batch in batches))
        assert all(all(flags) for flags in stored)
        assert (await spool.stats()).depth == 1 + 20 * 30
        # each key's entries in the order of their batch's own list
        for k in range(7):
            ids = [r.message_id for r in await spool.pending(1000) if r.key == f"k{k}"]
            for b in range(30):
                mine = [i for i in ids if i.startswith(f"m{b}-")]
                assert mine == sorted(mine, key=lambda i: int(i.split("-")[1]))
    finally:
        await admin.aclose()
