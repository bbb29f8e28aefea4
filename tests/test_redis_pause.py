"""Three collectors on one Redis and a stand-in whose key is changed under them: the first
401 pauses all three, only one of them sends (probes) while the key is refused, and once
the key works again every collector resumes, with nothing lost or dead-lettered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from collector.spool import SharedPause
from standin import StandIn

from .conftest import YESPO_KEY, Running, delivering, running
from .redis_server import RedisServer
from .test_delivery import eventually, forwarder, send, spool

COLLECTORS = 3
ONE_CONTACT = 12  # events of one contact: one of them in flight at a time, in any collector


def view(contact: str, n: int) -> dict[str, Any]:
    return {
        "type": "pageViewed",
        "messageId": f"pv-{contact}-{n}",
        "contact": {"email": f"{contact}@example.com"},
        "properties": {"location": f"https://shop.example/{n}"},
    }


@asynccontextmanager
async def collectors_on_one_redis(
    tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[tuple[list[Running], StandIn]]:
    redis_server.flush()
    async with AsyncExitStack() as stack:
        standin = await stack.enter_async_context(StandIn(api_key=YESPO_KEY))
        collectors = []
        for n in range(COLLECTORS):
            settings = delivering(tmp_path / str(n), standin.url, spool_url=redis_server.url)
            c = await stack.enter_async_context(running(settings))
            forwarder(c).breaker.auth_probe_ms = (100, 200)  # probes come often in a test
            collectors.append(c)
        yield collectors, standin


async def metric(c: Running, pattern: str) -> float:
    async with c.http.get(c.url + "/metrics") as resp:
        found = re.search(rf"^\w*{pattern} (\S+)$", await resp.text(), re.M)
    return float(found.group(1)) if found else 0.0


async def refused_sends(c: Running) -> float:
    """Requests this collector sent that Yespo answered 401/403."""
    return await metric(c, r'delivery_attempts_total\{outcome="auth"\}')


async def readyz(c: Running) -> str:
    async with c.http.get(c.url + "/readyz") as resp:
        state: str = (await resp.json())["forwarder"]
        return state


def refused(standin: StandIn) -> int:
    return int(standin.stats()["requests"].get("/api/v1/event", {}).get("401", 0))


async def test_a_401_pauses_every_collector_one_probes_and_all_resume_losing_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with collectors_on_one_redis(tmp_path, redis_server) as (collectors, standin):
        standin.api_key = "rotated"  # the collectors' key is now wrong: 401
        for n in range(ONE_CONTACT):
            await send(collectors[n % COLLECTORS], [view("one", n)])

        async def all_paused() -> bool:
            return all(["401" in await readyz(c) for c in collectors])

        await eventually(all_paused)
        probes_seen = refused(standin)
        await eventually(lambda: _more(standin, probes_seen + 5))  # the pause goes on

        # Only one collector sent while the key was refused: the first 401 paused the
        # others before they could lease (the one contact's head was the only entry that
        # could go), and only the holder of the turn probes. Each collector alone would
        # have leased the head and met the 401 itself, and then probed on its own.
        sends = [await refused_sends(c) for c in collectors]
        assert sorted(s > 0 for s in sends) == [False] * (COLLECTORS - 1) + [True], sends
        assert sum(sends) == refused(standin)  # every 401 the stand-in gave, one collector's
        for c, s in zip(collectors, sends, strict=True):
            state = await readyz(c)
            assert state.startswith("paused: Yespo answered HTTP 401"), state
            if not s:
                assert "paused for every collector on this spool" in state, state
        stats = await spool(collectors[0]).stats()
        assert (stats.depth, stats.dead, len(standin.events)) == (ONE_CONTACT, 0, 0)

        standin.api_key = YESPO_KEY  # fixed: a probe is delivered and all resume
        await standin.wait_for_events(ONE_CONTACT, within_s=30)

        async def all_running() -> bool:
            return all([await readyz(c) == "running" for c in collectors])

        await eventually(all_running)
        for c in collectors:  # none is held back: the spool hands entries to each again
            assert await spool(c).delivery_pause(60_000) == SharedPause(None, 0, False)
        for i, c in enumerate(collectors):
            await send(c, [view(f"after{i}", k) for k in range(20)])
        total = ONE_CONTACT + COLLECTORS * 20
        await standin.wait_for_events(total, within_s=30)
        await eventually(lambda: _depth_is(collectors[0], 0))
        assert (await spool(collectors[0]).stats()).dead == 0
        arrived = [orjson.loads(r.raw) for r in standin.events]
        assert len(arrived) == total  # each once
        pages = [b["params"][1]["value"] for b in arrived if b["keyValue"] == "one@example.com"]
        expected = [f'{{"location":"https://shop.example/{n}"}}' for n in range(ONE_CONTACT)]
        assert pages == expected  # the one contact's events: all of them, in order


async def _more(standin: StandIn, count: int) -> bool:
    return refused(standin) >= count


async def _depth_is(c: Running, depth: int) -> bool:
    return (await spool(c).stats()).depth == depth
