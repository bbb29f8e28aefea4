"""The live inspector's steps on Redis: one capped stream, `{yc}:journal`, that every
collector on the spool writes its steps to and reads all of them from, so a page on any
collector shows the journeys of all (docs/inspector.md)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...errors import SpoolError
from ..base import StepStream


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSteps(StepStream):
    """`StepStream` on a Redis stream (XADD with MAXLEN ~ and MINID ~, XREAD BLOCK)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._key = prefix + "journal"
        # Collectors with watchers: name -> "<until ms> <their filters' JSON>".
        self._watchers = prefix + "journal:watchers"

    async def publish(self, steps: Sequence[bytes], max_steps: int, since_ms: int) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for step in steps:
                pipe.xadd(self._key, {"s": step}, maxlen=max_steps, approximate=True)
            pipe.xtrim(self._key, minid=f"{since_ms}-0", approximate=True)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis: cannot publish the inspector's steps: {exc}") from exc

    @staticmethod
    def _entries(found: Any) -> list[tuple[str, bytes]]:
        return [(_text(entry_id), fields[b"s"]) for entry_id, fields in found]

    async def backlog(
        self, after: str | None, since_ms: int, count: int
    ) -> list[tuple[str, bytes]]:
        start = f"({after}" if after else f"{since_ms}-0"
        try:
            # The newest `count`, oldest first.
            found: Any = await self._redis.xrevrange(self._key, "+", start, count=count)
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis: cannot read the inspector's steps: {exc}") from exc
        return self._entries(list(reversed(found or [])))

    async def last_id(self) -> str:
        try:
            found = await self._redis.xrevrange(self._key, "+", "-", count=1)
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis: cannot read the inspector's steps: {exc}") from exc
        return _text(found[0][0]) if found else "0-0"

    async def read(self, after: str, block_ms: int, count: int) -> list[tuple[str, bytes]]:
        try:
            found: Any = await self._redis.xread({self._key: after}, count=count, block=block_ms)
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis: cannot read the inspector's steps: {exc}") from exc
        return self._entries(found[0][1]) if found else []

    async def watch(self, ttl_ms: int, name: str, filters: bytes) -> None:
        until = int(time.time() * 1000) + ttl_ms
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self._watchers, name, b"%d %s" % (until, filters))
            pipe.pexpire(self._watchers, ttl_ms)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis: cannot say that the inspector watches: {exc}") from exc

    async def watched(self, name: str) -> list[bytes]:
        try:
            found: Any = await self._redis.hgetall(self._watchers)
            now = int(time.time() * 1000)
            filters, gone = [], []
            for who, value in found.items():
                until, _, wanted = value.partition(b" ")
                if int(until) < now:
                    gone.append(who)  # a collector that stopped without saying so
                elif _text(who) != name:
                    filters.append(wanted)
            if gone:
                await self._redis.hdel(self._watchers, *gone)
        except (RedisError, OSError) as exc:
            raise SpoolError(f"redis: cannot read who watches: {exc}") from exc
        return filters
