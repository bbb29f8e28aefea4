"""The Redis spool's layout against Redis Streams, doing the same work on one server.

    .venv/bin/python bench/redis_layout.py [--events 100000] [--keys 1000] [--writers 16]

One redis-server of the run's own (appendonly yes, appendfsync always), three layouts in
turn, each on an empty server:

* lists: the collector's spool (`collector.spool.redis`: per-key lists, heads sorted set,
  dedup, leases, one Lua script per call): `--writers` tasks append batches of 100 events
  spread over `--keys` contacts, then one forwarder-like loop leases 32 at a time and acks
  them until the queue is empty.
* stream: one stream and a consumer group, the raw work alone: XADD each event (a batch
  of 100 in one pipeline, one round trip), then XREADGROUP COUNT 32 + XACK + XDEL. It keeps
  no per-key order across consumers, no dedup, no bound, no order-after-contact.
* partitioned: what Streams need to keep a key's order with several collectors: keys
  hashed to 16 partition streams, each read by the one consumer that owns it (here all
  owned by one, read in turn). Still without dedup, bound, leases that expire to another
  collector, or orders waiting for their contact.

Prints events/s of the append and the drain phase for each. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from bench.ingest import redis_server  # noqa: E402
from collector.normalize import Normalized  # noqa: E402
from collector.spool.redis import RedisSpool  # noqa: E402

BATCH = 100
LEASE = 32
PARTITIONS = 16


def body(n: int, key: int) -> bytes:
    return (
        b'{"eventTypeKey":"pageViewed","keyValue":"c%d@example.com","params":['
        b'{"name":"email","value":"c%d@example.com"},{"name":"url","value":"https://shop.example/%d"}]}'
        % (key, key, n)
    )


def entries(start: int, keys: int) -> list[Normalized]:
    return [
        Normalized(f"m{n}", True, "event", f"contact:c{n % keys}", "pageViewed", None,
                   body(n, n % keys))
        for n in range(start, start + BATCH)
    ]  # fmt: skip


async def batches(events: int, writers: int, write: object) -> float:
    """Append `events` in batches of 100 from `writers` tasks; seconds taken."""
    todo = list(range(0, events, BATCH))

    async def writer() -> None:
        while todo:
            await write(todo.pop())  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - started


async def lists(url: str, args: argparse.Namespace) -> tuple[float, float]:
    spool = RedisSpool(url, max_events=10 * args.events, dedup_window_ms=86_400_000)
    await spool.open()
    try:

        async def write(start: int) -> None:
            await spool.append(entries(start, args.keys), int(time.time() * 1000))

        appended = await batches(args.events, args.writers, write)
        started, done = time.perf_counter(), 0
        while done < args.events:
            records = await spool.lease(LEASE, 30_000, int(time.time() * 1000))
            if records:
                await spool.ack([r.seq for r in records])
                done += len(records)
        return appended, time.perf_counter() - started
    finally:
        await spool.close()


async def streams(url: str, args: argparse.Namespace, partitions: int) -> tuple[float, float]:
    redis = Redis.from_url(url)
    names = [f"{{yc}}:s{p}" for p in range(partitions)]
    for name in names:
        await redis.xgroup_create(name, "fw", id="0", mkstream=True)
    try:

        async def write(start: int) -> None:
            pipe = redis.pipeline(transaction=False)
            for n in range(start, start + BATCH):
                key = n % args.keys
                stream = names[zlib.crc32(b"c%d" % key) % partitions]
                pipe.xadd(stream, {"k": f"contact:c{key}", "m": f"m{n}", "b": body(n, key)})
            await pipe.execute()

        appended = await batches(args.events, args.writers, write)
        started, done, turn = time.perf_counter(), 0, 0
        while done < args.events:
            stream = names[turn % partitions]
            turn += 1
            got = await redis.xreadgroup("fw", "c1", {stream: ">"}, count=LEASE)
            ids = [i for _, messages in got for i, _ in messages]
            if ids:
                pipe = redis.pipeline(transaction=False)
                pipe.xack(stream, "fw", *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()
                done += len(ids)
        return appended, time.perf_counter() - started
    finally:
        await redis.aclose()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir, redis_server(Path(workdir)) as url:
        redis = Redis.from_url(url)
        rows = []
        layouts = {
            "lists (the spool)": lambda: lists(url, args),
            "stream": lambda: streams(url, args, 1),
            f"partitioned ({PARTITIONS})": lambda: streams(url, args, PARTITIONS),
        }
        for name, run in layouts.items():
            await redis.flushall()
            appended, drained = await run()
            rows.append((name, args.events / appended, args.events / drained))
        await redis.aclose()
    print(f"{args.events} events, {args.keys} keys, {args.writers} writers of {BATCH},"
          f" drained {LEASE} at a time; appendfsync always")  # fmt: skip
    print(f"{'layout':<20} {'append ev/s':>12} {'drain ev/s':>12}")
    for name, append, drain in rows:
        print(f"{name:<20} {append:>12,.0f} {drain:>12,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
