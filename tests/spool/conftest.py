"""The spool's contract suite runs on every backend in `BACKENDS`: each test that takes
`spool` or `make_spool` runs once per backend, unchanged. A new backend joins by adding
its name here and a factory below."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.spool import Spool
from collector.spool.memory import MemorySpool
from collector.spool.redis import RedisSpool
from collector.spool.sqlite import SqliteSpool

from ..redis_server import RedisServer

BACKENDS = ["memory", "sqlite", "redis"]

WINDOW_MS = 60_000
T0 = 1_700_000_000_000


@dataclass(frozen=True)
class Entry:
    message_id: str
    key: str = "contact:a@example.com"
    client_id: bool = True
    kind: str = "event"
    event_type: str = "pageViewed"
    event_time: int | None = None
    body: bytes = b'{"eventTypeKey":"pageViewed"}'
    after: str | None = None


SpoolFactory = Callable[..., Spool]


def new_spool(
    backend: str, tmp_path: Path, max_events: int, window_ms: int, redis_url: str = ""
) -> Spool:
    if backend == "redis":
        return RedisSpool(redis_url, max_events=max_events, dedup_window_ms=window_ms)
    if backend == "memory":
        return MemorySpool(max_events=max_events, dedup_window_ms=window_ms)
    return SqliteSpool(str(tmp_path / "spool.db"), max_events=max_events, dedup_window_ms=window_ms)


@pytest.fixture(params=BACKENDS)
def make_spool(request: pytest.FixtureRequest, tmp_path: Path) -> SpoolFactory:
    redis_url = ""
    if request.param == "redis":  # one server for the session, emptied for each test
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        redis_url = server.url

    def make(max_events: int = 1000, window_ms: int = WINDOW_MS) -> Spool:
        return new_spool(request.param, tmp_path, max_events, window_ms, redis_url)

    return make


@pytest.fixture
async def spool(make_spool: SpoolFactory) -> AsyncIterator[Spool]:
    s = make_spool()
    await s.open()
    yield s
    await s.close()
