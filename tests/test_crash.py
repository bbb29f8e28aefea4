"""SIGKILL in the middle of a concurrent load: every acknowledged event survives, once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import API_KEY, Process, free_port

WORKERS = 32
KILL_AFTER_ACKS = 1500


def event(n: int) -> dict[str, Any]:
    return {
        "type": "productViewed",
        "messageId": f"crash-{n}",
        "contact": {"email": f"buyer{n % 97}@example.com"},
        "properties": {"productId": f"SKU-{n}", "price": 10.5, "isInStock": True},
    }


async def load(url: str, acked: set[str], attempted: set[str], stop: asyncio.Event) -> None:
    """Workers send single events and batches of 5 until the server goes away."""
    counter = iter(range(10**9))
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def worker(w: int, http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            size = 1 if w % 2 else 5
            events = [event(next(counter)) for _ in range(size)]
            ids = {e["messageId"] for e in events}
            attempted.update(ids)
            body = events[0] if size == 1 else {"batch": events}
            try:
                async with http.post(url + "/v1/events", json=body, headers=headers) as resp:
                    if resp.status == 200:
                        reply = await resp.json()
                        assert reply["accepted"] == size, reply
                        acked.update(ids)
            except (TimeoutError, aiohttp.ClientError):
                return  # the server is gone

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(w, http) for w in range(WORKERS)))


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT message_id FROM events")]


async def test_sigkill_under_load_loses_no_acknowledged_event(
    tmp_path: Path, processes: list[Process]
) -> None:
    db = tmp_path / "spool.db"
    # Delivery off: this test is about what ingest acknowledged being on disk.
    env = {
        "COLLECTOR_API_KEYS": API_KEY,
        "COLLECTOR_SPOOL_URL": f"sqlite:///{db}",
        "COLLECTOR_FORWARD": "false",
    }
    port = free_port()
    first = Process(port, env, tmp_path / "collector.log")
    processes.append(first)
    await first.wait_ready()

    acked: set[str] = set()
    attempted: set[str] = set()
    stop = asyncio.Event()
    loader = asyncio.create_task(load(first.url, acked, attempted, stop))
    while len(acked) < KILL_AFTER_ACKS:
        assert not loader.done(), loader
        await asyncio.sleep(0.005)
    first.kill()  # mid-flight: requests are still arriving
    await asyncio.wait_for(loader, 30)
    stop.set()

    ids = stored_ids(db)
    assert len(ids) == len(set(ids)), "an event was stored twice"
    missing = acked - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert len(acked) >= KILL_AFTER_ACKS

    # After a restart, a sender that retries everything it sent is told which ones the
    # collector already has, and nothing is stored twice.
    second = Process(port, env, tmp_path / "collector.log")
    processes.append(second)
    await second.wait_ready()
    retried = sorted(attempted)
    duplicates = 0
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(retried), 500):
            batch = [{**event(0), "messageId": mid} for mid in retried[start : start + 500]]
            async with http.post(
                second.url + "/v1/events",
                json={"batch": batch},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                assert resp.status == 200
                duplicates += (await resp.json())["duplicates"]
    assert duplicates == len(ids)  # exactly the ones stored before the kill
    second.stop()
    ids = stored_ids(db)
    assert sorted(ids) == retried
